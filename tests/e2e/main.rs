//! End-to-end: the real `patrol-server` binary on a loopback port, guards' phones played by the
//! real `patrol` command on their own store files, the control room reading the real API.

mod alarms;
mod attachments;
mod auth;
mod cli_output;
mod clock_skew;
mod compliance;
mod connections;
mod console;
mod console_sign_in;
mod crash;
mod demo;
mod evidence;
mod first_hour_errors;
mod flags;
mod gaps;
mod incidents_on_shift;
mod instances;
mod offline_shift;
mod overload;
mod panic_first;
mod readme;
mod report;
mod server_crash;
mod terminal;
mod throttle;
mod tls;
mod webhooks;
mod working_together;
