//! flannel's net-conf.json: `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax` and
//! `Backend: {Type, VNI, Port, DirectRouting}`. Keys match case-insensitively (as Go's encoding/json
//! does) and unknown keys are ignored. Pure: the caller reads the file.

use std::path::Path;

use serde_json::{Map, Value};

use super::error::ConfigError;

/// The fields weft reads from a net-conf.json; `None` when absent (or `null`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConf {
    pub network: Option<String>,
    pub subnet_len: Option<u64>,
    pub subnet_min: Option<String>,
    pub subnet_max: Option<String>,
    pub backend_type: Option<String>,
    pub vni: Option<u64>,
    pub port: Option<u64>,
    pub direct_routing: Option<bool>,
}

impl NetConf {
    /// Parses the text of a net-conf.json read from `path` (used in error messages).
    pub fn parse(text: &str, path: &Path) -> Result<NetConf, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| ConfigError::NetConfSyntax {
                path: path.to_path_buf(),
                source,
            })?;
        let ctx = Ctx { path, prefix: "" };
        let Value::Object(root) = value else {
            return Err(ctx.err("(top level)", &value, "expected a JSON object"));
        };
        let mut conf = NetConf {
            network: ctx.string(&root, "Network")?,
            subnet_len: ctx.number(&root, "SubnetLen")?,
            subnet_min: ctx.string(&root, "SubnetMin")?,
            subnet_max: ctx.string(&root, "SubnetMax")?,
            ..NetConf::default()
        };
        match lookup(&root, "Backend") {
            None | Some(Value::Null) => {}
            Some(Value::Object(backend)) => {
                let ctx = Ctx {
                    path,
                    prefix: "Backend.",
                };
                conf.backend_type = ctx.string(backend, "Type")?;
                conf.vni = ctx.number(backend, "VNI")?;
                conf.port = ctx.number(backend, "Port")?;
                conf.direct_routing = ctx.boolean(backend, "DirectRouting")?;
            }
            Some(other) => return Err(ctx.err("Backend", other, "expected a JSON object")),
        }
        Ok(conf)
    }
}

/// Go's encoding/json: an exact key match first, then a case-insensitive one.
fn lookup<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

struct Ctx<'a> {
    path: &'a Path,
    /// `Backend.` for the keys inside `Backend`.
    prefix: &'a str,
}

impl Ctx<'_> {
    /// The field name as errors show it: `SubnetLen in net-conf "/etc/weft/net-conf.json"`.
    fn field(&self, key: &str) -> String {
        net_conf_field(&format!("{}{key}", self.prefix), self.path)
    }

    fn err(&self, key: &str, value: &Value, reason: &str) -> ConfigError {
        let mut shown = value.to_string();
        if shown.len() > 80 {
            let mut cut = 80;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push_str("...");
        }
        ConfigError::invalid(self.field(key), shown, reason)
    }

    fn string(&self, map: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
        match lookup(map, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(key, other, "expected a string")),
        }
    }

    fn number(&self, map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ConfigError> {
        match lookup(map, key) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(key, v, "expected a non-negative integer")),
            Some(other) => Err(self.err(key, other, "expected a number")),
        }
    }

    fn boolean(&self, map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
        match lookup(map, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, other, "expected true or false")),
        }
    }
}

/// How a net-conf key is named in errors.
pub(crate) fn net_conf_field(key: &str, path: &Path) -> String {
    format!("{key} in net-conf {:?}", path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetConf, ConfigError> {
        NetConf::parse(text, Path::new("/etc/weft/net-conf.json"))
    }

    #[test]
    fn parses_flannel_example() {
        let conf = parse(
            r#"{
              "Network": "10.244.0.0/16",
              "EnableIPv6": false,
              "SubnetLen": 26,
              "SubnetMin": "10.244.1.0",
              "SubnetMax": "10.244.200.192",
              "Backend": {"Type": "vxlan", "VNI": 42, "Port": 4789, "DirectRouting": true, "GBP": false}
            }"#,
        )
        .unwrap();
        assert_eq!(
            conf,
            NetConf {
                network: Some("10.244.0.0/16".into()),
                subnet_len: Some(26),
                subnet_min: Some("10.244.1.0".into()),
                subnet_max: Some("10.244.200.192".into()),
                backend_type: Some("vxlan".into()),
                vni: Some(42),
                port: Some(4789),
                direct_routing: Some(true),
            }
        );
    }

    #[test]
    fn minimal_and_empty() {
        assert_eq!(parse("{}").unwrap(), NetConf::default());
        let conf = parse(r#"{"Network": "10.1.0.0/16", "Backend": null}"#).unwrap();
        assert_eq!(conf.network.as_deref(), Some("10.1.0.0/16"));
        assert_eq!(conf.backend_type, None);
    }

    #[test]
    fn keys_match_case_insensitively_exact_first() {
        let conf =
            parse(r#"{"network": "10.1.0.0/16", "backend": {"type": "VXLAN", "vni": 3}}"#).unwrap();
        assert_eq!(conf.network.as_deref(), Some("10.1.0.0/16"));
        assert_eq!(conf.backend_type.as_deref(), Some("VXLAN"));
        assert_eq!(conf.vni, Some(3));
        let conf = parse(r#"{"network": "10.1.0.0/16", "Network": "10.2.0.0/16"}"#).unwrap();
        assert_eq!(conf.network.as_deref(), Some("10.2.0.0/16"));
    }

    #[test]
    fn syntax_error_is_one_line() {
        let err = parse("{\"Network\": ").unwrap_err();
        assert!(matches!(err, ConfigError::NetConfSyntax { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("invalid --net-conf \"/etc/weft/net-conf.json\": "),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn wrong_types_name_the_key() {
        let cases = [
            (r#"[1, 2]"#, "(top level)"),
            (r#"{"Network": 10}"#, "Network"),
            (r#"{"SubnetLen": "24"}"#, "SubnetLen"),
            (r#"{"SubnetLen": -1}"#, "SubnetLen"),
            (r#"{"SubnetLen": 24.5}"#, "SubnetLen"),
            (r#"{"Backend": "vxlan"}"#, "Backend"),
            (r#"{"Backend": {"Type": 1}}"#, "Backend.Type"),
            (r#"{"Backend": {"VNI": "1"}}"#, "Backend.VNI"),
            (r#"{"Backend": {"Port": true}}"#, "Backend.Port"),
            (
                r#"{"Backend": {"DirectRouting": "yes"}}"#,
                "Backend.DirectRouting",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(
                err.field(),
                format!("{key} in net-conf \"/etc/weft/net-conf.json\""),
                "{text}: {err}"
            );
            assert!(!err.to_string().contains('\n'));
        }
    }
}
