//! `aovis_rotator::config::Config::parse`: the rotator's TOML configuration. In
//! Lambda it is outside input (env `AOVIS_ROTATOR_CONFIG` or the SSM parameter named
//! by `AOVIS_ROTATOR_CONFIG_PARAMETER`, which anyone allowed `ssm:PutParameter` on
//! it can write), and on cron hosts whoever edits the file.
//!
//! Beyond "never panics":
//! - a refusal is one line (the binary prints it as its one stderr line);
//! - an accepted config holds only what validation promises: every binding has a
//!   valid profile name, an IAM role ARN, managed node ids, a session STS allows,
//!   and the document is never a shell document;
//! - it re-validates: written back as TOML (defaults made explicit) and parsed
//!   again, it is the same `Config`, so what the rotator runs is what a reviewer
//!   reads.
#![no_main]

use aovis_formats::ProfileName;
use aovis_rotator::config::{is_instance_id, is_role_arn, Config, Targets};
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(err) => {
            let message = err.to_string();
            assert!(
                !message.contains('\n'),
                "a message of several lines: {message:?}"
            );
            return;
        }
    };
    assert!(!config.bindings.is_empty());
    assert!(
        config.document != "AWS-RunShellScript" && config.document != "AWS-RunPowerShellScript"
    );
    assert!(config.parameter_prefix.starts_with('/') && config.parameter_prefix.ends_with('/'));
    assert!((1..=256).contains(&config.concurrency));
    for (index, binding) in config.bindings.iter().enumerate() {
        assert_eq!(binding.number, index + 1);
        assert!(
            ProfileName::new(binding.profile.as_str()).is_ok(),
            "{}",
            binding.profile
        );
        assert!(is_role_arn(&binding.role_arn), "{}", binding.role_arn);
        assert!((900..=43_200).contains(&binding.session_duration_seconds));
        match &binding.targets {
            Targets::Tags(tags) => {
                assert!(!tags.is_empty() && tags.values().all(|v| !v.is_empty()))
            }
            Targets::InstanceIds(ids) => {
                assert!(
                    !ids.is_empty() && ids.iter().all(|id| is_instance_id(id)),
                    "{ids:?}"
                )
            }
        }
    }
    // Both are total on an accepted config.
    let chaining_ok = config.check_role_chaining().is_ok();
    assert_eq!(
        chaining_ok,
        config
            .bindings
            .iter()
            .all(|b| b.session_duration_seconds <= 3600)
    );
    let _ = config.warnings();

    let written = to_toml(&config);
    match Config::parse(&written) {
        Ok(again) => assert_eq!(again, config, "re-parsed from:\n{written}"),
        Err(err) => panic!("an accepted config does not re-validate: {err}\n{written}"),
    }
});

/// The config as TOML with every default explicit.
fn to_toml(config: &Config) -> String {
    let mut top = Table::new();
    if let Some(region) = &config.region {
        top.insert("region".into(), Value::String(region.clone()));
    }
    top.insert("document".into(), Value::String(config.document.clone()));
    top.insert(
        "parameter_prefix".into(),
        Value::String(config.parameter_prefix.clone()),
    );
    top.insert(
        "concurrency".into(),
        Value::Integer(config.concurrency as i64),
    );
    top.insert(
        "max_attempts".into(),
        Value::Integer(i64::from(config.max_attempts)),
    );
    top.insert(
        "confirm_timeout_seconds".into(),
        Value::Integer(i64::from(config.confirm_timeout_seconds)),
    );
    if let Some(period) = config.schedule_period_minutes {
        top.insert(
            "schedule_period_minutes".into(),
            Value::Integer(i64::from(period)),
        );
    }
    let bindings = config
        .bindings
        .iter()
        .map(|binding| {
            let mut table = Table::new();
            table.insert("profile".into(), Value::String(binding.profile.to_string()));
            table.insert("role_arn".into(), Value::String(binding.role_arn.clone()));
            table.insert(
                "session_duration_seconds".into(),
                Value::Integer(i64::from(binding.session_duration_seconds)),
            );
            if let Some(id) = &binding.external_id {
                table.insert("external_id".into(), Value::String(id.clone()));
            }
            if let Some(policy) = &binding.session_policy {
                table.insert("session_policy".into(), Value::String(policy.clone()));
            }
            let mut targets = Table::new();
            match &binding.targets {
                Targets::Tags(tags) => {
                    let tags: Table = tags
                        .iter()
                        .map(|(key, values)| {
                            let values = values.iter().cloned().map(Value::String).collect();
                            (key.clone(), Value::Array(values))
                        })
                        .collect();
                    targets.insert("tags".into(), Value::Table(tags));
                }
                Targets::InstanceIds(ids) => {
                    let ids = ids.iter().cloned().map(Value::String).collect();
                    targets.insert("instance_ids".into(), Value::Array(ids));
                }
            }
            table.insert("targets".into(), Value::Table(targets));
            Value::Table(table)
        })
        .collect();
    top.insert("binding".into(), Value::Array(bindings));
    top.to_string()
}
