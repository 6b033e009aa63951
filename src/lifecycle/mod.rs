//! The shipment lifecycle: create, process, resend PIN, clean up. Plain async functions
//! over [`crate::app::Deps`]; the handlers, the cron jobs and the tests all call them.
