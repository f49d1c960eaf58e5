//! Scheduler expressions per run type, their validation, and business-calendar planning.

use chrono::{DateTime, TimeZone, Utc, Weekday};
use qcvr::config::RunType;
use qcvr::schedule::{
    CalendarEdge, CalendarEntry, CalendarError, DayOfWeek, Interval, IntervalUnit, MonthDay,
    OnceAt, ScheduleError, ScheduleSpec, TimeOfDay, plan_calendar_schedules, stale_schedules,
};

fn time(s: &str) -> TimeOfDay {
    s.parse().expect("valid time of day")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid RFC 3339 in the test")
        .with_timezone(&Utc)
}

#[test]
fn daily_weekly_and_monthly_become_six_field_crons() {
    let daily = ScheduleSpec::Daily { at: time("02:00") };
    assert_eq!(daily.expression().as_deref(), Some("cron(0 2 * * ? *)"));
    assert_eq!(daily.run_type(), RunType::Daily);

    let weekly = ScheduleSpec::Weekly {
        day: "MON".parse().expect("MON is a weekday"),
        at: time("06:30"),
    };
    assert_eq!(weekly.expression().as_deref(), Some("cron(30 6 ? * MON *)"));

    let monthly = ScheduleSpec::Monthly {
        day: "15".parse().expect("15 is a month day"),
        at: time("03:00"),
    };
    assert_eq!(monthly.expression().as_deref(), Some("cron(0 3 15 * ? *)"));

    let sunday_late = ScheduleSpec::Weekly {
        day: DayOfWeek::new(Weekday::Sun),
        at: time("23:59"),
    };
    assert_eq!(
        sunday_late.expression().as_deref(),
        Some("cron(59 23 ? * SUN *)")
    );
}

#[test]
fn periodic_runs_use_rate_with_singular_units_for_one() {
    let every = |s: &str| {
        ScheduleSpec::Periodically {
            every: s.parse().expect("valid interval"),
        }
        .expression()
    };
    assert_eq!(every("15m").as_deref(), Some("rate(15 minutes)"));
    assert_eq!(every("15 minutes").as_deref(), Some("rate(15 minutes)"));
    assert_eq!(every("2h").as_deref(), Some("rate(2 hours)"));
    assert_eq!(every("1 hour").as_deref(), Some("rate(1 hour)"));
    assert_eq!(every("1m").as_deref(), Some("rate(1 minute)"));
    // A rate counts from the schedule's creation, so non-divisors of an hour are fine.
    assert_eq!(every("7 min").as_deref(), Some("rate(7 minutes)"));
}

#[test]
fn once_uses_at_with_seconds() {
    let once = |s: &str| {
        ScheduleSpec::Once {
            at: s.parse::<OnceAt>().expect("valid date-time"),
        }
        .expression()
    };
    assert_eq!(
        once("2026-12-24T18:00").as_deref(),
        Some("at(2026-12-24T18:00:00)")
    );
    assert_eq!(
        once("2026-12-24 18:00:30").as_deref(),
        Some("at(2026-12-24T18:00:30)")
    );
}

#[test]
fn on_demand_and_calendar_types_have_no_recurring_expression() {
    for (spec, run_type) in [
        (ScheduleSpec::OnDemand, RunType::OnDemand),
        (ScheduleSpec::CalendarStart, RunType::CalendarStart),
        (ScheduleSpec::CalendarEnd, RunType::CalendarEnd),
    ] {
        assert_eq!(spec.expression(), None);
        assert_eq!(spec.run_type(), run_type);
    }
}

#[test]
fn bad_times_are_rejected() {
    for bad in [
        "25:00", "24:00", "12:60", "12", "12:5", "-1:00", "ab:cd", "", "123:00",
    ] {
        assert_eq!(
            bad.parse::<TimeOfDay>(),
            Err(ScheduleError::TimeOfDay(bad.to_owned())),
            "{bad:?} must be refused"
        );
    }
    assert!(TimeOfDay::new(24, 0).is_err());
    assert_eq!(time("0:05").to_string(), "00:05");
    let message = "25:00"
        .parse::<TimeOfDay>()
        .expect_err("invalid")
        .to_string();
    assert!(message.contains("HH:MM"), "{message}");
}

#[test]
fn bad_days_are_rejected() {
    assert_eq!(
        "FUNDAY".parse::<DayOfWeek>(),
        Err(ScheduleError::Weekday("FUNDAY".to_owned()))
    );
    assert_eq!(
        "monday".parse::<DayOfWeek>(),
        Ok(DayOfWeek::new(Weekday::Mon))
    );
    for bad in ["0", "32", "-1", "x", ""] {
        assert_eq!(
            bad.parse::<MonthDay>(),
            Err(ScheduleError::MonthDay(bad.to_owned())),
            "{bad:?} must be refused"
        );
    }
    assert!(MonthDay::new(0).is_err());
    assert!(MonthDay::new(32).is_err());
    assert_eq!(MonthDay::new(31).map(MonthDay::get), Ok(31));
}

#[test]
fn bad_intervals_are_rejected() {
    for bad in ["0m", "0 hours", "15", "m", "15 days", "1.5h", "-5m", ""] {
        assert_eq!(
            bad.parse::<Interval>(),
            Err(ScheduleError::Interval(bad.to_owned())),
            "{bad:?} must be refused"
        );
    }
    assert!(Interval::new(0, IntervalUnit::Minutes).is_err());
}

#[test]
fn bad_date_times_are_rejected() {
    for bad in [
        "2026-02-30T10:00",
        "2026-12-24",
        "24/12/2026 18:00",
        "2026-12-24T25:00",
    ] {
        assert_eq!(
            bad.parse::<OnceAt>(),
            Err(ScheduleError::DateTime(bad.to_owned())),
            "{bad:?} must be refused"
        );
    }
}

fn entry(id: &str, start: &str, end: &str) -> CalendarEntry {
    CalendarEntry {
        calendar: "ops".to_owned(),
        entry_id: id.to_owned(),
        name: format!("window {id}"),
        start: utc(start),
        end: utc(end),
    }
}

#[test]
fn calendar_plans_only_upcoming_edges_in_utc_earliest_first() {
    // GIVEN two entries ahead, one whose start passed but whose end is ahead, one in the past
    let entries = [
        entry(
            "late",
            "2026-06-10T08:00:00+02:00",
            "2026-06-10T18:00:00+02:00",
        ),
        entry("early", "2026-06-02T22:30:00Z", "2026-06-03T01:00:00Z"),
        entry("ongoing", "2026-05-31T09:00:00Z", "2026-06-01T17:00:00Z"),
        entry("past", "2026-05-01T09:00:00Z", "2026-05-01T10:00:00Z"),
    ];
    let now = utc("2026-06-01T12:00:00Z");

    // WHEN the start edges are planned
    let starts = plan_calendar_schedules(&entries, CalendarEdge::Start, now).expect("valid");

    // THEN only future starts, in UTC, earliest first, named after the entries
    let got: Vec<(&str, &str, &str)> = starts
        .iter()
        .map(|s| (s.name.as_str(), s.expression.as_str(), s.timezone))
        .collect();
    assert_eq!(
        got,
        [
            ("qcvr.ops.early.start", "at(2026-06-02T22:30:00)", "UTC"),
            ("qcvr.ops.late.start", "at(2026-06-10T06:00:00)", "UTC"),
        ]
    );

    // AND the end edges include the ongoing entry's end
    let ends = plan_calendar_schedules(&entries, CalendarEdge::End, now).expect("valid");
    let names: Vec<&str> = ends.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "qcvr.ops.ongoing.end",
            "qcvr.ops.early.end",
            "qcvr.ops.late.end"
        ]
    );
    assert_eq!(ends[0].at, utc("2026-06-01T17:00:00Z"));
}

#[test]
fn calendar_edge_at_now_or_within_the_current_second_is_past() {
    let now = utc("2026-06-01T12:00:00Z");
    let at_now = entry("now", "2026-06-01T12:00:00.700Z", "2026-06-01T12:00:01Z");
    let planned = plan_calendar_schedules(&[at_now], CalendarEdge::Start, now).expect("valid");
    assert!(planned.is_empty(), "{planned:?}");

    let end = plan_calendar_schedules(
        &[entry(
            "now",
            "2026-06-01T11:00:00Z",
            "2026-06-01T12:00:01.500Z",
        )],
        CalendarEdge::End,
        now,
    )
    .expect("valid");
    assert_eq!(end[0].expression, "at(2026-06-01T12:00:01)");
}

#[test]
fn calendar_names_fit_scheduler_limits_and_bad_entries_are_refused() {
    let mut long = entry(
        "0123456789abcdef0123456789abcdef0123",
        "2026-07-01T00:00:00Z",
        "2026-07-02T00:00:00Z",
    );
    long.calendar = "abcdefghijklmnop".to_owned();
    long.validate()
        .expect("the longest allowed names are valid");
    assert!(long.schedule_name(CalendarEdge::Start).len() <= 64);

    let mut too_long = long.clone();
    too_long.entry_id.push('x');
    assert!(matches!(
        too_long.validate(),
        Err(CalendarError::EntryId(_))
    ));

    let mut dotted = long.clone();
    dotted.calendar = "ops.team".to_owned();
    assert!(matches!(
        dotted.validate(),
        Err(CalendarError::CalendarName(_))
    ));

    let mut unnamed = long.clone();
    unnamed.name = "  ".to_owned();
    assert!(matches!(
        unnamed.validate(),
        Err(CalendarError::EmptyName(_))
    ));

    let backwards = entry("b", "2026-07-02T00:00:00Z", "2026-07-01T00:00:00Z");
    let err = plan_calendar_schedules(
        &[backwards],
        CalendarEdge::Start,
        utc("2026-01-01T00:00:00Z"),
    )
    .expect_err("an entry ending before its start is refused");
    assert!(matches!(err, CalendarError::EndBeforeStart { .. }), "{err}");
}

#[test]
fn stale_schedules_are_ours_and_no_longer_planned() {
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("valid");
    let planned = plan_calendar_schedules(
        &[entry(
            "keep",
            "2026-06-02T00:00:00Z",
            "2026-06-03T00:00:00Z",
        )],
        CalendarEdge::Start,
        now,
    )
    .expect("valid");
    let existing = [
        "qcvr.ops.keep.start".to_owned(),
        "qcvr.ops.gone.start".to_owned(),
        "qcvr.ops.keep.end".to_owned(),
        "someone-elses".to_owned(),
    ];
    assert_eq!(
        stale_schedules(&planned, &existing),
        ["qcvr.ops.gone.start", "qcvr.ops.keep.end"]
    );
}

#[test]
fn calendar_edges_follow_the_run_type() {
    assert_eq!(
        CalendarEdge::for_run_type(RunType::CalendarStart),
        Some(CalendarEdge::Start)
    );
    assert_eq!(
        CalendarEdge::for_run_type(RunType::CalendarEnd),
        Some(CalendarEdge::End)
    );
    assert_eq!(CalendarEdge::for_run_type(RunType::Daily), None);
}
