//! `mirror run` flags merged over the config file (README "Commands": without a file,
//! `--interface`, `--port` and `--shadow` make one target; flags override the file).

use super::target::{ShadowUrl, TargetConfig, WRITE_METHODS};
use super::validate::{check_interface, check_sample_percent, parse_listen};
use super::{Config, ConfigError};

/// Name of the target `mirror run` makes from `--port` and `--shadow` without a config file.
pub const IMPLICIT_TARGET_NAME: &str = "default";

/// The `mirror run` flags that change the configuration. Empty/`None`/`false` means "not given".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOverrides {
    /// `--interface` (repeatable): replaces `[capture] interfaces`.
    pub interfaces: Vec<String>,
    /// `--port`: the single target's port.
    pub port: Option<u16>,
    /// `--shadow`: the single target's shadow URL.
    pub shadow: Option<String>,
    /// `--sample`: `sample_percent` of every target.
    pub sample_percent: Option<f64>,
    /// `--allow-writes`: every target also mirrors POST, PUT, PATCH and DELETE.
    pub allow_writes: bool,
    /// `--metrics-addr`: replaces `[metrics] listen`.
    pub metrics_addr: Option<String>,
}

impl Config {
    /// The configuration `mirror run` uses: the file's (if any) with the flags applied.
    ///
    /// - Without a file, `--port` and `--shadow` are required and make one target named
    ///   [`IMPLICIT_TARGET_NAME`] with every other setting at its default.
    /// - With a file of one target, `--port` and `--shadow` replace that target's values.
    /// - With a file of several targets, `--port` and `--shadow` are an error (which target would
    ///   they change?); the error names the targets.
    /// - `--sample` and `--allow-writes` apply to every target. `--allow-writes` sets
    ///   `allow_writes = true` and adds POST, PUT, PATCH and DELETE to `methods` (without a way
    ///   to list methods on the command line, permission alone would change nothing).
    /// - `--interface` replaces the file's interface list; `--metrics-addr` its listen address.
    ///
    /// At least one interface must result, from the file or the flags.
    pub fn with_overrides(
        file: Option<Config>,
        overrides: &RunOverrides,
    ) -> Result<Config, ConfigError> {
        let shadow = overrides
            .shadow
            .as_deref()
            .map(ShadowUrl::parse)
            .transpose()
            .map_err(|message| ConfigError::flag("--shadow", message))?;
        let mut config = match file {
            None => implicit_config(overrides.port, shadow)?,
            Some(mut config) => {
                apply_target_flags(&mut config, overrides.port, shadow)?;
                config
            }
        };
        if let Some(percent) = overrides.sample_percent {
            let percent =
                check_sample_percent(percent).map_err(|m| ConfigError::flag("--sample", m))?;
            for target in &mut config.targets {
                target.sample_percent = percent;
            }
        }
        if overrides.allow_writes {
            for target in &mut config.targets {
                target.allow_writes = true;
                for method in WRITE_METHODS {
                    if !target.methods.iter().any(|known| known == method) {
                        target.methods.push(method.to_owned());
                    }
                }
            }
        }
        if !overrides.interfaces.is_empty() {
            for name in &overrides.interfaces {
                check_interface(name).map_err(|m| ConfigError::flag("--interface", m))?;
            }
            config.capture.interfaces = overrides.interfaces.clone();
        }
        if config.capture.interfaces.is_empty() {
            return Err(ConfigError::flag(
                "--interface",
                "no capture interface: pass --interface IFACE or set [capture] interfaces in the config file",
            ));
        }
        if let Some(address) = &overrides.metrics_addr {
            config.metrics.listen =
                parse_listen(address).map_err(|m| ConfigError::flag("--metrics-addr", m))?;
        }
        Ok(config)
    }
}

fn implicit_config(port: Option<u16>, shadow: Option<ShadowUrl>) -> Result<Config, ConfigError> {
    let missing = |flag| {
        ConfigError::flag(
            flag,
            format!("{flag} is required without --config (it defines the implicit target)"),
        )
    };
    let port = port.ok_or_else(|| missing("--port"))?;
    let shadow = shadow.ok_or_else(|| missing("--shadow"))?;
    check_port(port)?;
    Ok(Config {
        capture: Default::default(),
        metrics: Default::default(),
        limits: Default::default(),
        replay: Default::default(),
        verdict: Default::default(),
        sink: Default::default(),
        targets: vec![TargetConfig::with_defaults(
            IMPLICIT_TARGET_NAME.to_owned(),
            port,
            shadow,
        )],
    })
}

fn apply_target_flags(
    config: &mut Config,
    port: Option<u16>,
    shadow: Option<ShadowUrl>,
) -> Result<(), ConfigError> {
    if let [target] = config.targets.as_mut_slice() {
        if let Some(port) = port {
            check_port(port)?;
            target.port = port;
        }
        if let Some(shadow) = shadow {
            if target.shadows.len() > 1 {
                return Err(ConfigError::flag(
                    "--shadow",
                    format!(
                        "target `{}` has {} shadows: --shadow replaces a single one; edit the file instead",
                        target.name,
                        target.shadows.len()
                    ),
                ));
            }
            target.shadows[0].url = shadow;
        }
        return Ok(());
    }
    let flag = match (port, shadow) {
        (Some(_), _) => "--port",
        (None, Some(_)) => "--shadow",
        (None, None) => return Ok(()),
    };
    let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
    Err(ConfigError::flag(
        flag,
        format!(
            "{flag} applies to a single target but the config file defines {} ({}); set it in the file's [[target]] instead",
            names.len(),
            names.join(", ")
        ),
    ))
}

fn check_port(port: u16) -> Result<(), ConfigError> {
    if port == 0 {
        return Err(ConfigError::flag(
            "--port",
            "port 0 is invalid: allowed 1..=65535",
        ));
    }
    Ok(())
}
