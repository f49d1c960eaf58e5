//! Run types turned into EventBridge Scheduler expressions, and the business calendar.
//!
//! [`ScheduleSpec`] is the one place a run type becomes a Scheduler expression: the operator
//! CLI prints it for `sam deploy --parameter-overrides ScheduleExpression=...`, and the
//! template passes it through unchanged. Every field is validated when it is built, so a
//! `ScheduleSpec` always yields an expression Scheduler accepts.
//!
//! The business calendar keeps [`CalendarEntry`] items in the `calendar` table
//! ([`CalendarStore`]). For the `calendar_start` / `calendar_end` run types,
//! [`plan_calendar_schedules`] turns the entries into one-time `at()` schedules, and
//! [`CalendarScheduler`] creates, updates and deletes them in the stack's calendar schedule
//! group. The planning is pure; only the two adapters talk to AWS.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target,
};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc, Weekday};

use crate::config::RunType;
use crate::store::StoreError;

/// A schedule field that Scheduler would refuse or misread. Each message says what to type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// Not a time of day.
    #[error("{0:?} is not a time of day: use HH:MM from 00:00 to 23:59")]
    TimeOfDay(String),
    /// Not a day of the week.
    #[error("{0:?} is not a day of the week: use MON, TUE, WED, THU, FRI, SAT or SUN")]
    Weekday(String),
    /// Not a day of the month.
    #[error("{0:?} is not a day of the month: use 1 to 31")]
    MonthDay(String),
    /// Not an interval Scheduler's `rate()` accepts.
    #[error(
        "{0:?} is not an interval: use a whole number of at least 1 with a unit, \
         e.g. 15m, 15 minutes, 2h or 2 hours"
    )]
    Interval(String),
    /// Not a date and time.
    #[error("{0:?} is not a date and time: use YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS")]
    DateTime(String),
}

/// A time of day, minute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    /// A time of day; `hour` 0..=23, `minute` 0..=59.
    pub fn new(hour: u8, minute: u8) -> Result<Self, ScheduleError> {
        if hour > 23 || minute > 59 {
            return Err(ScheduleError::TimeOfDay(format!("{hour}:{minute:02}")));
        }
        Ok(TimeOfDay { hour, minute })
    }

    /// The hour, 0..=23.
    pub fn hour(self) -> u8 {
        self.hour
    }

    /// The minute, 0..=59.
    pub fn minute(self) -> u8 {
        self.minute
    }
}

impl FromStr for TimeOfDay {
    type Err = ScheduleError;

    /// Parses `HH:MM` (`H:MM` too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::TimeOfDay(s.to_owned());
        let (hour, minute) = s.trim().split_once(':').ok_or_else(bad)?;
        let digits = |p: &str, max_len: usize| {
            !p.is_empty() && p.len() <= max_len && p.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(hour, 2) || !digits(minute, 2) || minute.len() != 2 {
            return Err(bad());
        }
        let hour = hour.parse().map_err(|_| bad())?;
        let minute = minute.parse().map_err(|_| bad())?;
        TimeOfDay::new(hour, minute).map_err(|_| bad())
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// A day of the week, as Scheduler's cron names it (`MON` … `SUN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayOfWeek(Weekday);

impl DayOfWeek {
    /// The day.
    pub fn new(day: Weekday) -> Self {
        DayOfWeek(day)
    }

    /// The cron name: `MON`, `TUE`, …
    pub fn cron_name(self) -> &'static str {
        match self.0 {
            Weekday::Mon => "MON",
            Weekday::Tue => "TUE",
            Weekday::Wed => "WED",
            Weekday::Thu => "THU",
            Weekday::Fri => "FRI",
            Weekday::Sat => "SAT",
            Weekday::Sun => "SUN",
        }
    }
}

impl FromStr for DayOfWeek {
    type Err = ScheduleError;

    /// Parses `MON` or `Monday`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // chrono also accepts the three-letter and full English names, case-insensitively.
        s.trim()
            .parse::<Weekday>()
            .map(DayOfWeek)
            .map_err(|_| ScheduleError::Weekday(s.to_owned()))
    }
}

/// A day of the month, 1..=31. Scheduler skips months that lack the day (a monthly run on
/// the 31st does not run in April).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthDay(u8);

impl MonthDay {
    /// A day of the month, 1..=31.
    pub fn new(day: u8) -> Result<Self, ScheduleError> {
        if !(1..=31).contains(&day) {
            return Err(ScheduleError::MonthDay(day.to_string()));
        }
        Ok(MonthDay(day))
    }

    /// The day, 1..=31.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl FromStr for MonthDay {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let day = s
            .trim()
            .parse::<u8>()
            .map_err(|_| ScheduleError::MonthDay(s.to_owned()))?;
        MonthDay::new(day).map_err(|_| ScheduleError::MonthDay(s.to_owned()))
    }
}

/// The unit of a periodic interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
}

/// How often a periodic run starts: `rate(N minutes|hours)`.
///
/// Any whole N ≥ 1 is accepted, including ones that do not divide an hour or a day:
/// Scheduler counts a rate from the moment the schedule is created, not from the clock, so
/// `rate(7 minutes)` is as exact as `rate(15 minutes)`. A run that lasts longer than the
/// interval overlaps the next one; pick an interval longer than a typical run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    count: u32,
    unit: IntervalUnit,
}

impl Interval {
    /// An interval of `count` ≥ 1 units.
    pub fn new(count: u32, unit: IntervalUnit) -> Result<Self, ScheduleError> {
        if count == 0 {
            let unit = match unit {
                IntervalUnit::Minutes => "minutes",
                IntervalUnit::Hours => "hours",
            };
            return Err(ScheduleError::Interval(format!("0 {unit}")));
        }
        Ok(Interval { count, unit })
    }

    /// The `rate()` body: `15 minutes`, `1 hour`.
    fn rate_body(self) -> String {
        let unit = match (self.unit, self.count) {
            (IntervalUnit::Minutes, 1) => "minute",
            (IntervalUnit::Minutes, _) => "minutes",
            (IntervalUnit::Hours, 1) => "hour",
            (IntervalUnit::Hours, _) => "hours",
        };
        format!("{} {unit}", self.count)
    }
}

impl FromStr for Interval {
    type Err = ScheduleError;

    /// Parses `15m`, `15min`, `15 minutes`, `1 minute`, `2h`, `2 hours`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::Interval(s.to_owned());
        let trimmed = s.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(bad)?;
        let (count, unit) = trimmed.split_at(split);
        let count: u32 = count.parse().map_err(|_| bad())?;
        let unit = match unit.trim().to_ascii_lowercase().as_str() {
            "m" | "min" | "mins" | "minute" | "minutes" => IntervalUnit::Minutes,
            "h" | "hour" | "hours" => IntervalUnit::Hours,
            _ => return Err(bad()),
        };
        Interval::new(count, unit).map_err(|_| bad())
    }
}

/// A local date and time (second precision) in the schedule's time zone, for `at()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnceAt(NaiveDateTime);

impl OnceAt {
    /// A local date and time; sub-second parts are dropped.
    pub fn new(at: NaiveDateTime) -> Self {
        OnceAt(at.trunc_subsecs(0))
    }
}

impl FromStr for OnceAt {
    type Err = ScheduleError;

    /// Parses `YYYY-MM-DDTHH:MM[:SS]` (a space may replace the `T`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim().replacen(' ', "T", 1);
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(&text, format).ok())
            .map(OnceAt::new)
            .ok_or_else(|| ScheduleError::DateTime(s.to_owned()))
    }
}

fn at_expression(at: NaiveDateTime) -> String {
    format!("at({})", at.format("%Y-%m-%dT%H:%M:%S"))
}

/// A run type with its validated fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleSpec {
    /// Every day at a time.
    Daily {
        /// When.
        at: TimeOfDay,
    },
    /// Every week on a day at a time.
    Weekly {
        /// Which day.
        day: DayOfWeek,
        /// When.
        at: TimeOfDay,
    },
    /// Every month on a day at a time.
    Monthly {
        /// Which day (months without it are skipped).
        day: MonthDay,
        /// When.
        at: TimeOfDay,
    },
    /// Every N minutes or hours.
    Periodically {
        /// How often.
        every: Interval,
    },
    /// Once, at a date and time.
    Once {
        /// When, in the schedule's time zone.
        at: OnceAt,
    },
    /// Only when started by hand: no schedule.
    OnDemand,
    /// At the start of each business-calendar entry: one-time schedules, see
    /// [`plan_calendar_schedules`].
    CalendarStart,
    /// At the end of each business-calendar entry.
    CalendarEnd,
}

impl ScheduleSpec {
    /// The run type this spec is for.
    pub fn run_type(&self) -> RunType {
        match self {
            ScheduleSpec::Daily { .. } => RunType::Daily,
            ScheduleSpec::Weekly { .. } => RunType::Weekly,
            ScheduleSpec::Monthly { .. } => RunType::Monthly,
            ScheduleSpec::Periodically { .. } => RunType::Periodically,
            ScheduleSpec::Once { .. } => RunType::Once,
            ScheduleSpec::OnDemand => RunType::OnDemand,
            ScheduleSpec::CalendarStart => RunType::CalendarStart,
            ScheduleSpec::CalendarEnd => RunType::CalendarEnd,
        }
    }

    /// The Scheduler expression of the stack's recurring schedule, read in the
    /// `ScheduleTimezone` parameter's zone; `None` for the run types without one
    /// (on demand, and the calendar types whose schedules are one-time).
    pub fn expression(&self) -> Option<String> {
        // Scheduler's cron has six fields: minute hour day-of-month month day-of-week year,
        // and one of the two day fields must be `?`.
        match *self {
            ScheduleSpec::Daily { at } => Some(format!("cron({} {} * * ? *)", at.minute, at.hour)),
            ScheduleSpec::Weekly { day, at } => Some(format!(
                "cron({} {} ? * {} *)",
                at.minute,
                at.hour,
                day.cron_name()
            )),
            ScheduleSpec::Monthly { day, at } => Some(format!(
                "cron({} {} {} * ? *)",
                at.minute,
                at.hour,
                day.get()
            )),
            ScheduleSpec::Periodically { every } => Some(format!("rate({})", every.rate_body())),
            ScheduleSpec::Once { at } => Some(at_expression(at.0)),
            ScheduleSpec::OnDemand | ScheduleSpec::CalendarStart | ScheduleSpec::CalendarEnd => {
                None
            }
        }
    }
}

/// Which edge of a calendar entry starts the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarEdge {
    /// The entry's start.
    Start,
    /// The entry's end.
    End,
}

impl CalendarEdge {
    /// The edge a run type uses; `None` for the non-calendar run types.
    pub fn for_run_type(run_type: RunType) -> Option<CalendarEdge> {
        match run_type {
            RunType::CalendarStart => Some(CalendarEdge::Start),
            RunType::CalendarEnd => Some(CalendarEdge::End),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            CalendarEdge::Start => "start",
            CalendarEdge::End => "end",
        }
    }
}

/// Longest calendar name: keeps schedule names within Scheduler's 64 characters.
pub const CALENDAR_NAME_MAX: usize = 16;

/// Longest entry id (a UUID fits).
pub const ENTRY_ID_MAX: usize = 36;

/// Prefix of every one-time calendar schedule name; schedules without it are left alone.
pub const CALENDAR_SCHEDULE_PREFIX: &str = "qcvr.";

/// A calendar entry that cannot be stored or scheduled, or a Scheduler call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// A calendar name with characters or a length Scheduler names cannot carry.
    #[error("calendar {0:?} is not a valid name: use 1 to 16 letters, digits, '-' or '_'")]
    CalendarName(String),
    /// An entry id with characters or a length Scheduler names cannot carry.
    #[error("entry id {0:?} is not valid: use 1 to 36 letters, digits, '-' or '_'")]
    EntryId(String),
    /// An entry without a name.
    #[error("calendar entry {0:?} has an empty name: give it a name")]
    EmptyName(String),
    /// An entry that ends before it starts.
    #[error(
        "calendar entry {entry_id:?} ends at {end} before it starts at {start}: swap or fix them"
    )]
    EndBeforeStart {
        /// The entry.
        entry_id: String,
        /// Its start.
        start: DateTime<Utc>,
        /// Its end.
        end: DateTime<Utc>,
    },
    /// A request the Scheduler client could not build (a missing required field).
    #[error("cannot build the Scheduler request for {name}: {detail}")]
    Request {
        /// The schedule.
        name: String,
        /// What was missing.
        detail: String,
    },
    /// Scheduler refused or failed a call.
    #[error(
        "Scheduler {operation} of {name} failed: {source}; check the stack's outputs \
         (CalendarScheduleGroupName, SchedulerRoleArn) and your scheduler:* and iam:PassRole \
         permissions, then run `qcvr calendar sync` again"
    )]
    Scheduler {
        /// The API call.
        operation: &'static str,
        /// The schedule or group.
        name: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn is_name_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One business-calendar entry (an item of the `calendar` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarEntry {
    /// The calendar it belongs to (partition key).
    pub calendar: String,
    /// Its id within the calendar (sort key).
    pub entry_id: String,
    /// What it is, for people.
    pub name: String,
    /// When it starts.
    pub start: DateTime<Utc>,
    /// When it ends.
    pub end: DateTime<Utc>,
}

impl CalendarEntry {
    /// Checks the names (they become Scheduler names) and that it does not end before it
    /// starts.
    pub fn validate(&self) -> Result<(), CalendarError> {
        if !is_name_part(&self.calendar, CALENDAR_NAME_MAX) {
            return Err(CalendarError::CalendarName(self.calendar.clone()));
        }
        if !is_name_part(&self.entry_id, ENTRY_ID_MAX) {
            return Err(CalendarError::EntryId(self.entry_id.clone()));
        }
        if self.name.trim().is_empty() {
            return Err(CalendarError::EmptyName(self.entry_id.clone()));
        }
        if self.end < self.start {
            return Err(CalendarError::EndBeforeStart {
                entry_id: self.entry_id.clone(),
                start: self.start,
                end: self.end,
            });
        }
        Ok(())
    }

    /// The instant of one edge.
    pub fn edge(&self, edge: CalendarEdge) -> DateTime<Utc> {
        match edge {
            CalendarEdge::Start => self.start,
            CalendarEdge::End => self.end,
        }
    }

    /// The name of this entry's one-time schedule for an edge:
    /// `qcvr.<calendar>.<entry_id>.<start|end>` (at most 64 characters once validated).
    pub fn schedule_name(&self, edge: CalendarEdge) -> String {
        format!(
            "{CALENDAR_SCHEDULE_PREFIX}{}.{}.{}",
            self.calendar,
            self.entry_id,
            edge.as_str()
        )
    }
}

/// A one-time schedule to create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeSchedule {
    /// The schedule name, derived from the entry.
    pub name: String,
    /// `at(YYYY-MM-DDTHH:MM:SS)`, in UTC.
    pub expression: String,
    /// The zone the expression is read in: always `UTC`.
    pub timezone: &'static str,
    /// The instant it fires (whole seconds).
    pub at: DateTime<Utc>,
    /// A description naming the entry.
    pub description: String,
}

/// The one-time schedules the calendar needs: one per entry whose edge is still ahead of
/// `now` (whole seconds), earliest first. Entries that fail [`CalendarEntry::validate`] are
/// returned as errors instead of being skipped silently.
pub fn plan_calendar_schedules(
    entries: &[CalendarEntry],
    edge: CalendarEdge,
    now: DateTime<Utc>,
) -> Result<Vec<OneTimeSchedule>, CalendarError> {
    let mut planned = Vec::new();
    for entry in entries {
        entry.validate()?;
        // Scheduler's at() has whole seconds; a fraction would be cut off, so an edge within
        // the current second is already past.
        let at = entry.edge(edge).trunc_subsecs(0);
        if at <= now {
            continue;
        }
        planned.push(OneTimeSchedule {
            name: entry.schedule_name(edge),
            expression: at_expression(at.naive_utc()),
            timezone: "UTC",
            at,
            description: format!(
                "qcvr chain at the {} of {:?} ({} / {})",
                edge.as_str(),
                entry.name,
                entry.calendar,
                entry.entry_id
            ),
        });
    }
    planned.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.name.cmp(&b.name)));
    Ok(planned)
}

/// The existing calendar schedules that no planned schedule keeps (entries removed, moved
/// into the past or switched edge). Names without [`CALENDAR_SCHEDULE_PREFIX`] are not ours
/// and are never listed.
pub fn stale_schedules(planned: &[OneTimeSchedule], existing: &[String]) -> Vec<String> {
    let keep: BTreeSet<&str> = planned.iter().map(|s| s.name.as_str()).collect();
    existing
        .iter()
        .filter(|name| name.starts_with(CALENDAR_SCHEDULE_PREFIX) && !keep.contains(name.as_str()))
        .cloned()
        .collect()
}

/// Where calendar schedules go and what they start (the stack's outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarTarget {
    /// The schedule group (`CalendarScheduleGroupName` output).
    pub group: String,
    /// The chain (`StateMachineArn` output).
    pub state_machine_arn: String,
    /// The role Scheduler assumes (`SchedulerRoleArn` output).
    pub role_arn: String,
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalendarSyncReport {
    /// Schedules created.
    pub created: Vec<String>,
    /// Schedules that existed and were rewritten.
    pub updated: Vec<String>,
    /// Stale schedules deleted.
    pub deleted: Vec<String>,
}

/// The execution input every calendar schedule sends.
pub const SCHEDULE_INPUT: &str = r#"{"trigger":"schedule"}"#;

/// Creates, updates and deletes the one-time calendar schedules.
#[derive(Debug, Clone)]
pub struct CalendarScheduler {
    client: aws_sdk_scheduler::Client,
    target: CalendarTarget,
}

impl CalendarScheduler {
    /// An adapter writing into `target.group`.
    pub fn new(client: aws_sdk_scheduler::Client, target: CalendarTarget) -> Self {
        CalendarScheduler { client, target }
    }

    fn parts(
        &self,
        schedule: &OneTimeSchedule,
    ) -> Result<(FlexibleTimeWindow, Target), CalendarError> {
        let request_error = |e: aws_sdk_scheduler::error::BuildError| CalendarError::Request {
            name: schedule.name.clone(),
            detail: e.to_string(),
        };
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(request_error)?;
        let target = Target::builder()
            .arn(&self.target.state_machine_arn)
            .role_arn(&self.target.role_arn)
            .input(SCHEDULE_INPUT)
            .build()
            .map_err(request_error)?;
        Ok((window, target))
    }

    /// Creates the schedule, or rewrites it when one of that name exists. Returns whether
    /// it was created. The schedule deletes itself after it fires.
    pub async fn upsert(&self, schedule: &OneTimeSchedule) -> Result<bool, CalendarError> {
        let (window, target) = self.parts(schedule)?;
        let created = self
            .client
            .create_schedule()
            .name(&schedule.name)
            .group_name(&self.target.group)
            .description(&schedule.description)
            .schedule_expression(&schedule.expression)
            .schedule_expression_timezone(schedule.timezone)
            .flexible_time_window(window.clone())
            .target(target.clone())
            .action_after_completion(ActionAfterCompletion::Delete)
            .state(ScheduleState::Enabled)
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(schedule = %schedule.name, at = %schedule.at, "created calendar schedule");
                Ok(true)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) =>
            {
                self.client
                    .update_schedule()
                    .name(&schedule.name)
                    .group_name(&self.target.group)
                    .description(&schedule.description)
                    .schedule_expression(&schedule.expression)
                    .schedule_expression_timezone(schedule.timezone)
                    .flexible_time_window(window)
                    .target(target)
                    .action_after_completion(ActionAfterCompletion::Delete)
                    .state(ScheduleState::Enabled)
                    .send()
                    .await
                    .map_err(|e| CalendarError::Scheduler {
                        operation: "UpdateSchedule",
                        name: schedule.name.clone(),
                        source: Box::new(e),
                    })?;
                tracing::info!(schedule = %schedule.name, at = %schedule.at, "updated calendar schedule");
                Ok(false)
            }
            Err(e) => Err(CalendarError::Scheduler {
                operation: "CreateSchedule",
                name: schedule.name.clone(),
                source: Box::new(e),
            }),
        }
    }

    /// Names of the calendar schedules in the group.
    pub async fn existing(&self) -> Result<Vec<String>, CalendarError> {
        let mut names = Vec::new();
        let mut pages = self
            .client
            .list_schedules()
            .group_name(&self.target.group)
            .name_prefix(CALENDAR_SCHEDULE_PREFIX)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CalendarError::Scheduler {
                operation: "ListSchedules",
                name: self.target.group.clone(),
                source: Box::new(e),
            })?;
            names.extend(
                page.schedules()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_owned)),
            );
        }
        Ok(names)
    }

    /// Deletes one schedule; one that is already gone (it fired) counts as deleted.
    pub async fn delete(&self, name: &str) -> Result<(), CalendarError> {
        match self
            .client
            .delete_schedule()
            .name(name)
            .group_name(&self.target.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(CalendarError::Scheduler {
                operation: "DeleteSchedule",
                name: name.to_owned(),
                source: Box::new(e),
            }),
        }
    }

    /// Makes the group hold exactly the planned schedules: upserts each one, then deletes
    /// the stale ones.
    pub async fn sync(
        &self,
        planned: &[OneTimeSchedule],
    ) -> Result<CalendarSyncReport, CalendarError> {
        let existing = self.existing().await?;
        let mut report = CalendarSyncReport::default();
        for schedule in planned {
            if self.upsert(schedule).await? {
                report.created.push(schedule.name.clone());
            } else {
                report.updated.push(schedule.name.clone());
            }
        }
        for name in stale_schedules(planned, &existing) {
            self.delete(&name).await?;
            tracing::info!(schedule = %name, "deleted stale calendar schedule");
            report.deleted.push(name);
        }
        Ok(report)
    }
}

/// Reads and writes calendar entries in the `calendar` table.
#[derive(Debug, Clone)]
pub struct CalendarStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl CalendarStore {
    /// A store on `{table_prefix}calendar`.
    pub fn new(client: aws_sdk_dynamodb::Client, table_prefix: &str) -> Self {
        CalendarStore {
            client,
            table: format!("{table_prefix}calendar"),
        }
    }

    fn unavailable(
        &self,
        operation: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
        missing_table: bool,
    ) -> StoreError {
        if missing_table {
            StoreError::MissingTable {
                table: self.table.clone(),
            }
        } else {
            StoreError::Unavailable {
                operation,
                table: self.table.clone(),
                source: Box::new(e),
            }
        }
    }

    /// Creates or replaces an entry after validating it.
    pub async fn put(&self, entry: &CalendarEntry) -> Result<(), CalendarStoreError> {
        entry.validate()?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("calendar", AttributeValue::S(entry.calendar.clone()))
            .item("entry_id", AttributeValue::S(entry.entry_id.clone()))
            .item("name", AttributeValue::S(entry.name.clone()))
            .item("start", AttributeValue::S(entry.start.to_rfc3339()))
            .item("end", AttributeValue::S(entry.end.to_rfc3339()))
            .send()
            .await
            .map_err(|e| {
                let missing = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception());
                self.unavailable("PutItem", e, missing)
            })?;
        Ok(())
    }

    /// Deletes an entry (absent entries are fine).
    pub async fn delete(&self, calendar: &str, entry_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("calendar", AttributeValue::S(calendar.to_owned()))
            .key("entry_id", AttributeValue::S(entry_id.to_owned()))
            .send()
            .await
            .map_err(|e| {
                let missing = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception());
                self.unavailable("DeleteItem", e, missing)
            })?;
        Ok(())
    }

    /// Every entry of a calendar, in entry-id order.
    pub async fn list(&self, calendar: &str) -> Result<Vec<CalendarEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#calendar = :calendar")
            .expression_attribute_names("#calendar", "calendar")
            .expression_attribute_values(":calendar", AttributeValue::S(calendar.to_owned()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                let missing = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception());
                self.unavailable("Query", e, missing)
            })?;
            for item in page.items() {
                entries.push(self.entry_from_item(item)?);
            }
        }
        Ok(entries)
    }

    fn entry_from_item(
        &self,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<CalendarEntry, StoreError> {
        let key = match (item.get("calendar"), item.get("entry_id")) {
            (Some(AttributeValue::S(c)), Some(AttributeValue::S(e))) => format!("{c}/{e}"),
            _ => "(no key)".to_owned(),
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            table: self.table.clone(),
            key: key.clone(),
            detail,
        };
        let text = |field: &str| match item.get(field) {
            Some(AttributeValue::S(s)) => Ok(s.clone()),
            _ => Err(corrupt(format!(
                "attribute {field} is missing or not a string"
            ))),
        };
        let instant = |field: &str| {
            let raw = text(field)?;
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| corrupt(format!("attribute {field} {raw:?} is not RFC 3339: {e}")))
        };
        Ok(CalendarEntry {
            calendar: text("calendar")?,
            entry_id: text("entry_id")?,
            name: text("name")?,
            start: instant("start")?,
            end: instant("end")?,
        })
    }
}

/// Why an entry was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CalendarStoreError {
    /// The entry is not valid.
    #[error(transparent)]
    Invalid(#[from] CalendarError),
    /// DynamoDB failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
