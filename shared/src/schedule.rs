//! Run types turned into EventBridge Scheduler expressions, and the business calendar.
