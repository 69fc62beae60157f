//! flannel's net-conf.json: `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`, the address
//! families (`EnableIPv4`, `EnableIPv6`, `IPv6Network`, `IPv6SubnetLen`, `IPv6SubnetMin`,
//! `IPv6SubnetMax`) and `Backend: {Type, VNI, Port, DirectRouting}`. Keys match case-insensitively (as Go's encoding/json
//! does). Unknown keys (a typo such as `SubnetLength` or `VNII`) and duplicate keys are refused,
//! naming the key, so that no setting is silently ignored; flannel keys weft does not implement
//! are accepted only with the value that means "off".

use std::io::Read as _;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::ConfigError;
use super::suggest::closest;

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
    pub enable_ipv4: Option<bool>,
    pub enable_ipv6: Option<bool>,
    pub ipv6_network: Option<String>,
    pub ipv6_subnet_len: Option<u64>,
    pub ipv6_subnet_min: Option<String>,
    pub ipv6_subnet_max: Option<String>,
}

/// Top-level keys weft reads.
const TOP_KEYS: [&str; 11] = [
    "Network",
    "SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "Backend",
    "EnableIPv4",
    "EnableIPv6",
    "IPv6Network",
    "IPv6SubnetLen",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
];
/// `Backend` keys weft reads.
const BACKEND_KEYS: [&str; 4] = ["Type", "VNI", "Port", "DirectRouting"];
/// flannel keys weft does not implement, with the value that means "not used".
const TOP_OFF: [(&str, Off); 1] = [("EnableNFTables", Off::AnyBool)];
const BACKEND_OFF: [(&str, Off); 2] = [("GBP", Off::Bool(false)), ("Learning", Off::Bool(false))];

#[derive(Clone, Copy)]
enum Off {
    Bool(bool),
    AnyBool,
}

impl NetConf {
    /// Reads `path` if it is a regular file of at most `max_len` bytes; `field` names the flag
    /// or variable that gave the path.
    pub fn read(path: &Path, field: &str, max_len: u64) -> Result<NetConf, ConfigError> {
        let read_err = |source| ConfigError::NetConfRead {
            field: field.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let rule = |reason: String| ConfigError::Rule {
            field: field.to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if !meta.is_file() {
            return Err(rule(format!(
                "{:?} is not a regular file",
                path.display().to_string()
            )));
        }
        let too_big = || {
            rule(format!(
                "{:?} is larger than {max_len} bytes (a net-conf.json is a few hundred)",
                path.display().to_string()
            ))
        };
        if meta.len() > max_len {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(max_len + 1).read_to_end(&mut bytes))
            .map_err(read_err)?;
        if bytes.len() as u64 > max_len {
            return Err(too_big());
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            rule(format!(
                "{:?} is not UTF-8 text",
                path.display().to_string()
            ))
        })?;
        NetConf::parse(&text, path).map_err(|e| match e {
            ConfigError::NetConfSyntax { path, source, .. } => ConfigError::NetConfSyntax {
                field: field.to_string(),
                path,
                source,
            },
            other => other,
        })
    }

    /// Parses the text of a net-conf.json read from `path` (used in error messages).
    pub fn parse(text: &str, path: &Path) -> Result<NetConf, ConfigError> {
        let tree: Json =
            serde_json::from_str(text).map_err(|source| ConfigError::NetConfSyntax {
                field: "--net-conf".to_string(),
                path: path.to_path_buf(),
                source,
            })?;
        let ctx = Ctx { path, prefix: "" };
        let Json::Object(root) = tree else {
            return Err(ctx.err("(top level)", &tree.into_value(), "expected a JSON object"));
        };
        ctx.check_keys(&root, &TOP_KEYS, &TOP_OFF)?;
        let mut conf = NetConf {
            network: ctx.string(&root, "Network")?,
            subnet_len: ctx.number(&root, "SubnetLen")?,
            subnet_min: ctx.string(&root, "SubnetMin")?,
            subnet_max: ctx.string(&root, "SubnetMax")?,
            enable_ipv4: ctx.boolean(&root, "EnableIPv4")?,
            enable_ipv6: ctx.boolean(&root, "EnableIPv6")?,
            ipv6_network: ctx.string(&root, "IPv6Network")?,
            ipv6_subnet_len: ctx.number(&root, "IPv6SubnetLen")?,
            ipv6_subnet_min: ctx.string(&root, "IPv6SubnetMin")?,
            ipv6_subnet_max: ctx.string(&root, "IPv6SubnetMax")?,
            ..NetConf::default()
        };
        match lookup(&root, "Backend") {
            None | Some(Json::Other(Value::Null)) => {}
            Some(Json::Object(backend)) => {
                let ctx = Ctx {
                    path,
                    prefix: "Backend.",
                };
                ctx.check_keys(backend, &BACKEND_KEYS, &BACKEND_OFF)?;
                conf.backend_type = ctx.string(backend, "Type")?;
                conf.vni = ctx.number(backend, "VNI")?;
                conf.port = ctx.number(backend, "Port")?;
                conf.direct_routing = ctx.boolean(backend, "DirectRouting")?;
            }
            Some(other) => {
                return Err(ctx.err(
                    "Backend",
                    &other.clone().into_value(),
                    "expected a JSON object",
                ));
            }
        }
        Ok(conf)
    }
}

/// A JSON value whose objects keep every key in order, duplicates included (serde_json's `Map`
/// keeps only the last, which would hide a duplicate).
#[derive(Clone, Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    Other(Value),
}

impl Json {
    fn into_value(self) -> Value {
        match self {
            Json::Other(v) => v,
            Json::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Other(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Other(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Other(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Other(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Other(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Other(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Other(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Other(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item.into_value());
        }
        Ok(Json::Other(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            entries.push((k, v));
        }
        Ok(Json::Object(entries))
    }
}

type Entries = [(String, Json)];

/// Go's encoding/json: an exact key match first, then a case-insensitive one. Duplicates are
/// refused before any lookup.
fn lookup<'a>(map: &'a Entries, key: &str) -> Option<&'a Json> {
    map.iter()
        .find(|(k, _)| k == key)
        .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
        .map(|(_, v)| v)
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

    fn rule(&self, key: &str, reason: String) -> ConfigError {
        ConfigError::Rule {
            field: self.field(key),
            reason,
        }
    }

    /// Refuses duplicate keys, unknown keys (suggesting the closest known one) and flannel keys
    /// weft does not implement unless they say "off".
    fn check_keys(
        &self,
        map: &Entries,
        known: &[&str],
        off: &[(&str, Off)],
    ) -> Result<(), ConfigError> {
        for (i, (key, value)) in map.iter().enumerate() {
            if let Some((first, _)) = map[..i].iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                let reason = if first == key {
                    "duplicate key (JSON would silently keep only one of them)".to_string()
                } else {
                    format!(
                        "duplicate key: {first:?} and {key:?} are the same key (keys match \
                         case-insensitively, as in flannel)"
                    )
                };
                return Err(self.rule(key, reason));
            }
            if known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                continue;
            }
            if let Some((name, want)) = off.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                let fine = match (want, value) {
                    (_, Json::Other(Value::Null)) => true,
                    (Off::Bool(b), Json::Other(Value::Bool(v))) => b == v,
                    (Off::AnyBool, Json::Other(Value::Bool(_))) => true,
                    _ => false,
                };
                if fine {
                    continue;
                }
                return Err(self.err(
                    key,
                    &value.clone().into_value(),
                    &format!("flannel's {name} is not supported by weft (remove it)"),
                ));
            }
            let candidates = known.iter().chain(off.iter().map(|(k, _)| k)).copied();
            let hint = match closest(key, candidates, 3) {
                Some(k) => format!(" (did you mean {k}?)"),
                None => format!(" (known keys: {})", known.join(", ")),
            };
            return Err(self.rule(key, format!("unknown key{hint}")));
        }
        Ok(())
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

    fn string(&self, map: &Entries, key: &str) -> Result<Option<String>, ConfigError> {
        match lookup(map, key) {
            None | Some(Json::Other(Value::Null)) => Ok(None),
            Some(Json::Other(Value::String(s))) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(key, &other.clone().into_value(), "expected a string")),
        }
    }

    fn number(&self, map: &Entries, key: &str) -> Result<Option<u64>, ConfigError> {
        match lookup(map, key) {
            None | Some(Json::Other(Value::Null)) => Ok(None),
            Some(Json::Other(v @ Value::Number(n))) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(key, v, "expected a non-negative integer")),
            Some(other) => Err(self.err(key, &other.clone().into_value(), "expected a number")),
        }
    }

    fn boolean(&self, map: &Entries, key: &str) -> Result<Option<bool>, ConfigError> {
        match lookup(map, key) {
            None | Some(Json::Other(Value::Null)) => Ok(None),
            Some(Json::Other(Value::Bool(b))) => Ok(Some(*b)),
            Some(other) => {
                Err(self.err(key, &other.clone().into_value(), "expected true or false"))
            }
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
                enable_ipv6: Some(false),
                ..NetConf::default()
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
        // The same key twice, in any case, is refused: JSON would keep only one silently.
        let e = parse(r#"{"network": "10.1.0.0/16", "Network": "10.2.0.0/16"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key"), "{e}");
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
