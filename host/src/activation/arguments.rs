//! What the action container is given, as upstream's `ContainerProxy.initializeAndRun` builds
//! it: the message's `content` with its locked (encrypted) arguments decrypted, split by
//! `initArgs` into `/init`'s environment and `/run`'s `value`; the activation's environment
//! (`namespace`, `action_name`, ..., `deadline`, and the caller's key unless the action's
//! `provide-api-key` annotation is false), prefixed `__OW_` and stringified for `/init`.
//!
//! The action document's own parameters are merged under `content` (a stock controller has
//! already merged them, so this changes nothing for it; without a controller — the catalog
//! demo, `keepwarm actions put` — they take effect). Encrypted ones are decrypted.

use super::message::ActivationMessage;
use crate::action::{Action, ParameterEncryption};
use serde_json::{json, Map, Value};

/// The arguments of one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Arguments {
    /// Exported to the action's environment by `/init` (not prefixed).
    pub init_env: Map<String, Value>,
    /// `/run`'s `value`: an object, or an array passed as it is.
    pub value: Value,
}

/// `content` merged over the action's parameters, decrypted and partitioned. `Err` names the
/// parameter that cannot be decrypted and why.
pub fn arguments(
    msg: &ActivationMessage,
    action: &Action,
    encryption: &ParameterEncryption,
) -> Result<Arguments, String> {
    let mut init_keys: Vec<&str> = msg.init_args.iter().map(String::as_str).collect();
    let mut merged = Map::new();
    for p in &action.parameters {
        let value = match &p.encryption {
            Some(scheme) => encryption
                .decrypt(scheme, &p.value)
                .map_err(|e| format!("parameter `{}`: {e}", p.key))?,
            None => p.value.clone(),
        };
        if p.init {
            init_keys.push(&p.key);
        }
        merged.insert(p.key.clone(), value);
    }
    let content = match &msg.content {
        None => Value::Object(Map::new()),
        Some(Value::Object(fields)) => {
            let mut fields = fields.clone();
            for (key, scheme) in &msg.locked_args {
                if let Some(v @ Value::String(_)) = fields.get(key) {
                    let clear = encryption
                        .decrypt(scheme, v)
                        .map_err(|e| format!("parameter `{key}`: {e}"))?;
                    fields.insert(key.clone(), clear);
                }
            }
            Value::Object(fields)
        }
        // upstream keeps anything but an object as it is (an array is the action's value)
        Some(other) => {
            return Ok(Arguments {
                init_env: Map::new(),
                value: other.clone(),
            })
        }
    };
    if let Value::Object(fields) = content {
        merged.extend(fields);
    }
    let (init_env, value): (Map<String, Value>, Map<String, Value>) = merged
        .into_iter()
        .partition(|(k, _)| init_keys.contains(&k.as_str()));
    Ok(Arguments {
        init_env,
        value: Value::Object(value),
    })
}

/// The activation's environment (unprefixed, as `/run` gets it next to `value`).
pub fn environment(
    msg: &ActivationMessage,
    action: &Action,
    deadline_ms: i64,
) -> Map<String, Value> {
    let mut env = Map::new();
    if action.annotation_is_truthy("provide-api-key", true) {
        if let Value::Object(auth) = &msg.user.authkey {
            env.extend(auth.clone());
        }
    }
    env.insert("namespace".into(), json!(msg.user.namespace.name));
    env.insert(
        "action_name".into(),
        json!(format!("/{}", msg.action.qualified())),
    );
    env.insert(
        "action_version".into(),
        json!(msg
            .action
            .version
            .clone()
            .unwrap_or_else(|| action.version.clone())),
    );
    env.insert("activation_id".into(), json!(msg.activation_id));
    env.insert("transaction_id".into(), json!(msg.transid.id));
    env.insert("deadline".into(), json!(deadline_ms.to_string()));
    env
}

/// Upstream's `containerInitializer`: environment values become strings (`null` → "",
/// anything but a string → its compact JSON).
fn stringified(env: Map<String, Value>) -> Map<String, Value> {
    env.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, Value::String(s))
        })
        .collect()
}

/// `/init`'s body.
pub fn init_body(action: &Action, args: &Arguments, env: &Map<String, Value>) -> Value {
    let mut all = args.init_env.clone();
    for (k, v) in env {
        all.insert(format!("__OW_{}", k.to_uppercase()), v.clone());
    }
    let mut value = Map::new();
    value.insert("name".into(), json!(action.name));
    value.insert("binary".into(), json!(action.exec.binary));
    value.insert(
        "main".into(),
        json!(action.exec.main.clone().unwrap_or_else(|| "main".into())),
    );
    if !all.is_empty() {
        value.insert("env".into(), Value::Object(stringified(all)));
    }
    if let Some(code) = action.exec.inline_code() {
        value.insert("code".into(), json!(code));
    }
    json!({ "value": value })
}

/// `/run`'s body: `value` next to the environment.
pub fn run_body(args: &Arguments, env: &Map<String, Value>) -> Value {
    let mut body = env.clone();
    body.insert("value".into(), args.value.clone());
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::KeyValue;

    fn message(content: Value, init_args: &[&str], locked: &[(&str, &str)]) -> ActivationMessage {
        serde_json::from_value(json!({
            "transid": ["tid", 1],
            "action": { "path": "guest", "name": "hello", "version": "0.0.2" },
            "user": { "subject": "s", "namespace": { "name": "guest", "uuid": "u" },
                      "authkey": { "api_key": "u:k" } },
            "activationId": "a1", "rootControllerIndex": { "asString": "0" }, "blocking": false,
            "content": content, "initArgs": init_args,
            "lockedArgs": locked.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        }))
        .unwrap()
    }

    fn action(parameters: Vec<KeyValue>, annotations: Vec<KeyValue>) -> Action {
        serde_json::from_value::<Action>(json!({
            "namespace": "guest", "name": "hello", "exec": { "kind": "nodejs:20", "code": "x" }
        }))
        .map(|mut a| {
            a.parameters = parameters;
            a.annotations = annotations;
            a
        })
        .unwrap()
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            init: false,
            encryption: None,
        }
    }

    #[test]
    fn init_args_go_to_the_init_environment_stringified_and_the_rest_to_run() {
        let msg = message(json!({"db": {"u": 1}, "name": "Ada"}), &["db"], &[]);
        let a = action(
            vec![kv("name", json!("default")), kv("greeting", json!("hi"))],
            vec![],
        );
        let args = arguments(&msg, &a, &ParameterEncryption::default()).unwrap();
        assert_eq!(args.value, json!({"name": "Ada", "greeting": "hi"}));
        let env = environment(&msg, &a, 99);
        let init = init_body(&a, &args, &env);
        assert_eq!(init["value"]["env"]["db"], json!("{\"u\":1}"));
        assert_eq!(init["value"]["env"]["__OW_API_KEY"], json!("u:k"));
        assert_eq!(
            init["value"]["env"]["__OW_ACTION_NAME"],
            json!("/guest/hello")
        );
        assert_eq!(init["value"]["env"]["__OW_DEADLINE"], json!("99"));
        let run = run_body(&args, &env);
        assert_eq!(run["action_version"], json!("0.0.2"));
        assert_eq!(run["api_key"], json!("u:k"));
        assert_eq!(run["value"]["name"], json!("Ada"));
    }

    #[test]
    fn locked_args_are_decrypted_and_provide_api_key_false_hides_the_key() {
        let enc = ParameterEncryption::new(Some("ra1V6AfOYAv0jCzEdufIFA=="), None).unwrap();
        let sealed = enc.encrypt("aes-128", &json!("s3cret")).unwrap();
        let msg = message(json!({"password": sealed}), &[], &[("password", "aes-128")]);
        let a = action(vec![], vec![kv("provide-api-key", json!(false))]);
        let args = arguments(&msg, &a, &enc).unwrap();
        assert_eq!(args.value, json!({"password": "s3cret"}));
        assert!(!environment(&msg, &a, 0).contains_key("api_key"));
        let err = arguments(&msg, &a, &ParameterEncryption::default()).unwrap_err();
        assert!(err.contains("password") && err.contains("no key"), "{err}");
    }

    #[test]
    fn array_content_is_passed_as_it_is() {
        let msg = message(json!([1, 2]), &[], &[]);
        let args = arguments(
            &msg,
            &action(vec![], vec![]),
            &ParameterEncryption::default(),
        )
        .unwrap();
        assert_eq!(args.value, json!([1, 2]));
    }
}
