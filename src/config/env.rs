//! Reading the environment: typed lookups that name the variable on error, URL and cron
//! checks. Tests read from a map instead of the process environment.

use std::collections::HashMap;
use std::str::FromStr;

use url::Url;

use super::ConfigError;

/// Reads the environment through a lookup function so tests need not touch the process env.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    pub fn process() -> Env<'static> {
        Env {
            lookup: Box::new(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty())),
        }
    }
    pub fn from_map(map: &'a HashMap<String, String>) -> Env<'a> {
        Env {
            lookup: Box::new(move |k| map.get(k).cloned().filter(|v| !v.trim().is_empty())),
        }
    }
    pub(super) fn get(&self, k: &str) -> Option<String> {
        (self.lookup)(k).map(|v| v.trim().to_string())
    }
    pub(super) fn url(&self, k: &str) -> Result<Option<Url>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => parse_url(k, &v).map(Some),
        }
    }
    /// A number within `range` (inclusive), `default` when unset.
    pub(super) fn num_in<T: FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        k: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError> {
        let v = self.num(k, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(
                k,
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }

    pub(super) fn num<T: FromStr>(&self, k: &str, default: T) -> Result<T, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<T>()
                .map_err(|_| ConfigError::new(k, format!("`{v}` is not a valid number"))),
        }
    }
}

pub fn parse_url(var: &str, v: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(v).map_err(|e| ConfigError::new(var, format!("not a URL ({e})")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(ConfigError::new(var, "must be an http(s) URL"));
    }
    if u.host_str().is_none() {
        return Err(ConfigError::new(var, "URL has no host"));
    }
    Ok(u)
}

/// Refuses a plain-http URL to anything but this machine.
pub fn require_https(var: &str, u: &Url) -> Result<(), ConfigError> {
    if allowed_outbound(u) {
        Ok(())
    } else {
        Err(ConfigError::new(
            var,
            format!(
                "`{}://{}` is not HTTPS; outbound calls must use https:// (plain http only to loopback)",
                u.scheme(),
                u.host_str().unwrap_or("")
            ),
        ))
    }
}

/// Validates a Spring-style 6-field cron string (seconds first).
pub fn validate_cron(var: &str, s: &str) -> Result<(), ConfigError> {
    let fields = s.split_whitespace().count();
    if fields != 6 {
        return Err(ConfigError::new(
            var,
            format!("`{s}` must have 6 fields (sec min hour day month weekday), found {fields}"),
        ));
    }
    // Parsed by the scheduler's own parser, so what validates here is what runs.
    tokio_cron_scheduler::Job::new_async(s, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| ConfigError::new(var, format!("`{s}` is not a valid cron expression ({e:?})")))
}

pub(super) fn required(env: &Env, var: &str, missing: &mut Vec<String>) -> Option<String> {
    let v = env.get(var);
    if v.is_none() {
        missing.push(var.to_string());
    }
    v
}

/// Whether a URL may be used for outbound calls: `https`, or `http` to a loopback host
/// (the sandbox and tests).
pub fn allowed_outbound(u: &url::Url) -> bool {
    match u.scheme() {
        "https" => true,
        "http" => match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}
