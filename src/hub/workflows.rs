//! What a workflow is made of and how a submission is checked against it:
//! the built-in workflows, runtime field types, and filter rules checked
//! with the agent's own rule compiler (the code that runs them).

use crate::agent::tasks::rules::{self, Context, Routing, RuleSpec};
use crate::hub::store::workflows::Workflow;
use crate::snapdiff::request::ROTATE_ON_ERROR;
use crate::task::TaskName;
use crate::task::names::CUSTOM_PREFIX;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The discovery of a bidirectional schedule (schedule-only).
pub const BIDIRECTIONAL_DISCOVERY: &str = "bidirectional_snapdiff";

/// The one workflow a bidirectional schedule takes.
pub const BIDIRECTIONAL_WORKFLOW: &str = "bidirectional_sync";

/// The runtime field naming a `send` or `bidirectional_sync` job's other
/// site.
pub const DESTINATION_SITE: &str = "destinationsite";

/// The discoveries a workflow may name, and the task each runs.
pub const DISCOVERIES: &[(&str, TaskName)] = &[
    ("recursive", TaskName::RecursiveNavigate),
    ("snapdiff", TaskName::Snapdiff),
    // Schedule-only, and only for `bidirectional_sync`: a snapdiff on each
    // site, collecting (`crate::hub::bisync`).
    (BIDIRECTIONAL_DISCOVERY, TaskName::Snapdiff),
];

/// The task a discovery name runs.
pub fn discovery_task(name: &str) -> Option<TaskName> {
    DISCOVERIES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The discovery options a workflow or schedule may set, with what each
/// takes: `skip_missing` (alias `allow_missing_paths`), true or false;
/// `min_age`, whole seconds.
pub const DISCOVERY_OPTIONS: &[&str] = &["skip_missing", "allow_missing_paths", "min_age"];

/// The discovery options that reach the discovery task, read from a
/// workflow's and a schedule's `discovery_options` (checked when stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// A missing input path is passed on instead of failing.
    pub skip_missing: bool,
    /// Files changed fewer than this many seconds ago are left alone.
    pub min_age: Option<u64>,
}

impl DiscoveryOptions {
    /// Reads checked options (unknown keys and wrong types are ignored:
    /// [`check_discovery_options`] refused them when they were stored).
    pub fn read(o: &Map<String, Value>) -> DiscoveryOptions {
        DiscoveryOptions {
            skip_missing: ["skip_missing", "allow_missing_paths"]
                .iter()
                .any(|k| o.get(*k).and_then(Value::as_bool) == Some(true)),
            min_age: o.get("min_age").and_then(Value::as_u64).filter(|s| *s > 0),
        }
    }
}

/// Checks discovery options as a workflow or schedule stores them.
pub fn check_discovery_options(o: &Map<String, Value>) -> Result<(), Invalid> {
    for (k, x) in o {
        let field = format!("discovery_options.{k}");
        match k.as_str() {
            "skip_missing" | "allow_missing_paths" if !x.is_boolean() => {
                return Err(invalid(field, "must be true or false"));
            }
            "min_age" if !x.is_u64() => {
                return Err(invalid(field, "must be a whole number of seconds, 0 or more"));
            }
            "skip_missing" | "allow_missing_paths" | "min_age" => {}
            _ => {
                return Err(invalid(
                    field,
                    format!("unknown option (known: {})", DISCOVERY_OPTIONS.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

/// A runtime field as a workflow declares it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Its name (`*name` in actions).
    pub name: String,
    /// Display name.
    pub label: String,
    /// `string`, `int`, `bool`, `choices`, `enum[site]`, `enum[queue]`, `list`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value when none is given.
    #[serde(default)]
    pub default: Option<Value>,
    /// For `choices`: `{label, value}`.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Help text.
    #[serde(default)]
    pub description: Option<String>,
}

/// One choice of a `choices` field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// Display name.
    pub label: String,
    /// The value (string or integer).
    pub value: Value,
}

const FIELD_TYPES: &[&str] = &["string", "int", "bool", "choices", "enum[site]", "enum[queue]", "list"];

/// What is wrong with a workflow or a submission, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The field, as a path (`fields[2].type`, `filter_rules`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Reads and checks a workflow's runtime fields.
pub fn parse_fields(v: &Value) -> Result<Vec<FieldSpec>, Invalid> {
    let specs: Vec<FieldSpec> = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            format!("fields{}", if path == "." { String::new() } else { format!(".{path}") }),
            e.into_inner().to_string(),
        )
    })?;
    for (i, f) in specs.iter().enumerate() {
        if !FIELD_TYPES.contains(&f.kind.as_str()) {
            return Err(invalid(
                format!("fields[{i}].type"),
                format!("must be one of {}, not {:?}", FIELD_TYPES.join(", "), f.kind),
            ));
        }
        if f.name.is_empty() || f.name.contains(char::is_whitespace) {
            return Err(invalid(format!("fields[{i}].name"), "a name without spaces"));
        }
        if specs[..i].iter().any(|o| o.name == f.name) {
            return Err(invalid(
                format!("fields[{i}].name"),
                format!("{:?} is declared twice", f.name),
            ));
        }
        if f.kind == "choices" && f.choices.is_empty() {
            return Err(invalid(format!("fields[{i}].choices"), "a choices field needs choices"));
        }
        if let Some(d) = &f.default {
            check_value(f, d, None).map_err(|p| invalid(format!("fields[{i}].default"), p))?;
        }
    }
    Ok(specs)
}

/// Names a submission may use for `enum[site]` and `enum[queue]` fields.
pub struct Known<'a> {
    /// Site names.
    pub sites: &'a [String],
    /// Queue names (of any site).
    pub queues: &'a [String],
}

fn check_value(f: &FieldSpec, v: &Value, known: Option<&Known<'_>>) -> Result<(), String> {
    let ok = match f.kind.as_str() {
        "string" => v.is_string(),
        "int" => v.is_i64() || v.is_u64(),
        "bool" => v.is_boolean(),
        "list" => v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| !x.is_array() && !x.is_object())),
        "choices" => {
            return match f.choices.iter().any(|c| c.value == *v) {
                true => Ok(()),
                false => Err(format!(
                    "must be one of {}, not {v}",
                    f.choices
                        .iter()
                        .map(|c| c.value.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
        }
        "enum[site]" | "enum[queue]" => {
            let Some(s) = v.as_str() else {
                return Err(format!("must be a {} name, not {v}", &f.kind[5..f.kind.len() - 1]));
            };
            return match known {
                Some(k) if f.kind == "enum[site]" && !k.sites.iter().any(|x| x == s) => Err(format!("no site {s:?}")),
                Some(k) if f.kind == "enum[queue]" && !k.queues.iter().any(|x| x == s) => {
                    Err(format!("no queue {s:?}"))
                }
                _ => Ok(()),
            };
        }
        _ => false,
    };
    match ok {
        true => Ok(()),
        false => Err(format!("must be of type {}, not {v}", f.kind)),
    }
}

/// A submission's field values checked against the workflow's fields,
/// defaults filled in. Unknown names are refused.
pub fn resolve_fields(
    specs: &[FieldSpec],
    given: &Map<String, Value>,
    known: &Known<'_>,
) -> Result<Map<String, Value>, Invalid> {
    let mut out = Map::new();
    for (k, v) in given {
        let spec = specs.iter().find(|s| s.name == *k).ok_or_else(|| {
            invalid(
                format!("fields.{k}"),
                format!(
                    "the workflow has no such field (it has: {})",
                    specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        check_value(spec, v, Some(known)).map_err(|p| invalid(format!("fields.{k}"), p))?;
        out.insert(k.clone(), v.clone());
    }
    for s in specs {
        if !out.contains_key(&s.name)
            && let Some(d) = &s.default
        {
            out.insert(s.name.clone(), d.clone());
        }
    }
    Ok(out)
}

/// Reads and checks filter rules: the shape, known task names, and that
/// the agent's compiler accepts them with every `*field` the workflow
/// declares (given a placeholder value).
pub fn parse_rules(v: &Value, fields: &[FieldSpec]) -> Result<Vec<RuleSpec>, Invalid> {
    let specs: Vec<RuleSpec> = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            format!(
                "filter_rules{}",
                if path == "." { String::new() } else { format!(".{path}") }
            ),
            e.into_inner().to_string(),
        )
    })?;
    let placeholders: Map<String, Value> = fields.iter().map(|f| (f.name.clone(), json!("placeholder"))).collect();
    compile(&specs, &placeholders, "site", "default", None)?;
    for (i, r) in v.as_array().into_iter().flatten().enumerate() {
        let actions: Vec<&Value> = match &r["action"] {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        for (j, a) in actions.into_iter().enumerate() {
            if let Some(name) = a["name"].as_str()
                && TaskName::parse(name).is_none()
                && !name.starts_with(CUSTOM_PREFIX)
            {
                return Err(invalid(
                    format!("filter_rules[{i}].action[{j}].name"),
                    format!("unknown task {name:?} (ferry's tasks are dynamo.tasks.*; plugins are {CUSTOM_PREFIX}*)"),
                ));
            }
        }
    }
    Ok(specs)
}

/// Compiles rules as the agent will, with the submission's patterns.
pub fn compile(
    specs: &[RuleSpec],
    fields: &Map<String, Value>,
    site: &str,
    queue: &str,
    patterns: Option<&Context>,
) -> Result<Vec<rules::Rule>, Invalid> {
    let mut ctx = patterns.cloned().unwrap_or_default();
    ctx.fields = fields.clone();
    rules::compile(
        specs,
        &ctx,
        &Routing {
            site: site.into(),
            queue: queue.into(),
        },
    )
    .map_err(|e| invalid("filter_rules", e.to_string()))
}

fn lock_level(default: &str) -> Value {
    json!({
        "name": "lock_level", "label": "Lock level", "type": "choices", "default": default,
        "choices": [
            {"label": "Partial", "value": "partial"},
            {"label": "Implicit", "value": "implicit"},
            {"label": "None", "value": "none"}
        ]
    })
}

fn builtin(name: &str, label: &str, discovery: Option<&str>, visible: bool, fields: Value, rules: Value) -> Workflow {
    Workflow {
        id: 0,
        name: name.into(),
        label: label.into(),
        icon_classes: json!([]),
        discovery: discovery.map(str::to_string),
        enabled: true,
        visible,
        schedule_only: false,
        external_only: false,
        fields,
        filter_rules: rules,
        discovery_options: json!({}),
        preferred_queue: None,
        builtin: true,
        record_files: Default::default(),
    }
}

/// The steps that send paths to another site through an endpoint (seed
/// 003:L12018-12035, L12071-12095): forget moved files' old locations,
/// premigrate on this site, then build the files from the objects on the
/// destination (`site`, `queue` and `hydrate` from runtime fields).
/// `migrate` and `stub` are those steps' further arguments; `check` goes
/// first when given.
fn send_steps(site_field: &str, migrate: Value, stub: Value, check: Option<Value>) -> Vec<Value> {
    let migrate = with(json!({"name": "dynamo.tasks.migrate", "premigrate": true}), migrate);
    let stub = with(
        json!({
            "name": "dynamo.tasks.reverse_stub",
            "site": format!("*{site_field}"),
            "queue": "*destinationqueue",
            "hydrate": "*hydrate",
        }),
        stub,
    );
    check
        .into_iter()
        .chain([
            json!({"name": "dynamo.tasks.remove_location_xattrs_for_moved"}),
            migrate,
            stub,
        ])
        .collect()
}

/// An action `step` with the further arguments `extra` (an object).
fn with(mut step: Value, extra: Value) -> Value {
    if let (Some(s), Value::Object(e)) = (step.as_object_mut(), extra) {
        s.extend(e);
    }
    step
}

/// The runtime fields that name where a multi-site workflow sends to:
/// the site (`site_field`, as the seed names it per workflow) and the
/// queue there (the job's own, or `default` where the destination has no
/// such queue: [`crate::hub::submit`] fills it in, 003:L10094).
fn destination_fields(site_field: &str, label: &str) -> Vec<Value> {
    vec![
        json!({"name": site_field, "label": label, "type": "enum[site]",
               "description": "the site the files go to"}),
        json!({"name": "destinationqueue", "label": "Destination queue", "type": "string",
               "description": "the queue on the destination site (default: the job's queue, or `default` where that site has no such queue)"}),
        json!({"name": "hydrate", "label": "Hydrate", "type": "bool", "default": false,
               "description": "whole files on the destination rather than stubs"}),
    ]
}

/// The workflows a new hub has (seed 003:L11975-12186): `migrate`,
/// `premigrate`, `recall`, `unmanage`, `send`, `site_sync`, and the
/// hidden `reverse_stub` and `delete_file`. The single-site steps act on
/// files (`type: file`); `send` and `site_sync` carry every kind of entry
/// (directories and symlinks travel too), as does `delete_file`.
pub fn builtins() -> Vec<Workflow> {
    let one = |task: &str, kind: &str, extra: Value| {
        let mut action = json!({"name": task});
        if let (Some(a), Some(e)) = (action.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        json!([{"state": "all", "type": kind, "action": [action]}])
    };
    vec![
        builtin(
            "migrate",
            "Dehydrate",
            Some("recursive"),
            true,
            json!([lock_level("partial")]),
            one("dynamo.tasks.migrate", "file", json!({"lock_level": "*lock_level"})),
        ),
        builtin(
            "premigrate",
            "Pre-Stage",
            Some("recursive"),
            true,
            json!([lock_level("implicit")]),
            one(
                "dynamo.tasks.migrate",
                "file",
                json!({"premigrate": true, "lock_level": "*lock_level"}),
            ),
        ),
        builtin(
            "recall",
            "Recall",
            Some("recursive"),
            true,
            json!([lock_level("implicit")]),
            one("dynamo.tasks.recall", "file", json!({"lock_level": "*lock_level"})),
        ),
        builtin(
            "unmanage",
            "Unmanage",
            Some("recursive"),
            true,
            json!([lock_level("implicit")]),
            one("dynamo.tasks.unmanage", "file", json!({"lock_level": "*lock_level"})),
        ),
        builtin(
            "reverse_stub",
            "Reverse stub",
            None,
            false,
            json!([
                {"name": "hydrate", "label": "Hydrate", "type": "bool", "default": false},
                {"name": "overwrite", "label": "Overwrite", "type": "bool", "default": false}
            ]),
            one(
                "dynamo.tasks.reverse_stub",
                "all",
                json!({"hydrate": "*hydrate", "overwrite": "*overwrite"}),
            ),
        ),
        builtin(
            "delete_file",
            "Delete",
            None,
            false,
            json!([{"name": "recursive", "label": "Recursive", "type": "bool", "default": false}]),
            one(
                "dynamo.tasks.delete_paths_from_gpfs",
                "all",
                json!({"recursive": "*recursive"}),
            ),
        ),
        // Added after the first six, so those keep their ids.
        builtin(
            "send",
            "Send",
            Some("recursive"),
            true,
            Value::Array(destination_fields(DESTINATION_SITE, "Destination site")),
            json!([{"state": "all", "type": "all", "action": send_steps(DESTINATION_SITE, json!({}), json!({}), None)}]),
        ),
        builtin(
            "site_sync",
            "Site sync",
            Some("snapdiff"),
            true,
            site_sync_fields(),
            site_sync_rules(),
        ),
        import("import_to_site_hydrated", "Import (hydrated)", true),
        import("import_to_site_dehydrated", "Import (dehydrated)", false),
        bidirectional_sync(),
    ]
}

/// `bidirectional_sync` (003:L11569-11634): schedule-only, on the
/// `bidirectional_snapdiff` discovery; the hub applies each site's
/// changes on the other ([`crate::hub::bisync`]) with these rules, made
/// once per direction (`destinationsite` is then the other site). Both
/// sites keep whole files: a stub written on one site could not be
/// changed there and sent back.
fn bidirectional_sync() -> Workflow {
    // Last write wins: a file written on both sites goes whichever way
    // its newer copy lies; so does a directory changed on both.
    let rules = sync_rules(
        DESTINATION_SITE,
        json!({"hydrate": true}),
        json!({"sync_preference": "newest", "directories_by_mtime": true}),
        true,
        json!({"make_parents": true}),
    );
    let mut fields = destination_fields(DESTINATION_SITE, "Other site");
    fields.retain(|f| f["name"] != "hydrate");
    fields.push(rotate_on_error_field());
    let mut w = builtin(
        BIDIRECTIONAL_WORKFLOW,
        "Bi-directional site sync",
        Some(BIDIRECTIONAL_DISCOVERY),
        true,
        Value::Array(fields),
        rules,
    );
    w.schedule_only = true;
    w
}

/// An import from an endpoint (003:L12114-12146): no discovery, the
/// input paths are object keys or prefixes on `endpoint`, placed under
/// `location` (or where the endpoint's root puts them) as files or stubs.
fn import(name: &str, label: &str, hydrate: bool) -> Workflow {
    builtin(
        name,
        label,
        None,
        true,
        json!([
            {"name": "endpoint", "label": "Endpoint", "type": "string",
             "description": "the endpoint whose objects to import"},
            {"name": "location", "label": "Location", "type": "string", "default": "",
             "description": "an absolute local directory to place them under (empty: where the endpoint's root puts them)"},
            lock_level("implicit")
        ]),
        json!([{"state": "all", "type": "all", "action": [{
            "name": "dynamo.tasks.import_files_from_external_target",
            "hydrate": hydrate, "endpoint": "*endpoint", "location": "*location", "lock_level": "*lock_level"
        }]}]),
    )
}

/// `site_sync`'s fields: where to, how conflicts on the destination are
/// settled (`sync_preference`, the UI's "Sync Policy", Newest by default:
/// 003:L1313-1320), and whether a failed sync still rotates.
fn site_sync_fields() -> Value {
    let mut f = destination_fields("destination", "Destination");
    f.push(json!({
        "name": "sync_preference", "label": "Sync policy", "type": "choices", "default": "newest",
        "description": "an updated file is sent when it is the newest on either site (newest), always (local), or never: the destination's copy stays (ignore)",
        "choices": [
            {"label": "Newest", "value": "newest"},
            {"label": "Local", "value": "local"},
            {"label": "Ignore", "value": "ignore"}
        ]
    }));
    f.push(rotate_on_error_field());
    Value::Array(f)
}

/// A sync's `snappdiff_rotate_on_error` field (the seed's spelling).
fn rotate_on_error_field() -> Value {
    json!({
        "name": ROTATE_ON_ERROR, "label": "Snapdiff rotate on error", "type": "bool", "default": true,
        "description": "rotate the snapshots even when some changes failed to sync (false: roll back, and the next run sends them again)"
    })
}

/// How many times in all a `site_sync` step tries a file that fails in a
/// way that passes: a lock another step of the run holds, an endpoint or
/// a destination site away for a while. Tries 2 to 6 run 2, 4, 8, 16 and
/// 32 s after the one before (the agent's retry backoff), so
/// an outage of about a minute costs the run nothing.
const SYNC_TRIES: u32 = 6;

/// `site_sync`'s rules by change state (003:L12069-12112): created and
/// updated entries are sent (updated ones after `check_sync_state` with
/// the destination), moves are replayed and deletions made there.
fn site_sync_rules() -> Value {
    // The destination's directories keep the times the sync gives them;
    // a move into a directory this change set created makes it (its
    // creation, and its attributes, come after the moves); moved stubs
    // get objects at their new keys, since the source reuses the old
    // ones for what it next writes there.
    sync_rules(
        "destination",
        json!({}),
        json!({"sync_preference": "*sync_preference"}),
        false,
        json!({"make_parents": true, "relocate": true}),
    )
}

/// A sync's rules by change state, towards the site named by the field
/// `site_field`: created and updated entries are sent (updated ones, and
/// created ones when `check_created`, after `check_sync_state` with
/// `check` arguments), reverse stubs get `stub` arguments, moves are
/// replayed with `moved` arguments and deletions made there.
fn sync_rules(site_field: &str, stub: Value, check: Value, check_created: bool, moved: Value) -> Value {
    // A file gone before its turn is the next run's business (aborted,
    // not failed); what is there on the destination is replaced. Names of
    // one file can be in two batches of a run (a new link and its updated
    // file), whose steps then meet on the file's lock: tried again.
    let migrate = json!({"overwrite": true, "abort_missing": true, "max_tries": SYNC_TRIES});
    let stub = with(json!({"overwrite": true, "max_tries": SYNC_TRIES}), stub);
    let site = format!("*{site_field}");
    let check = with(
        json!({
            "name": "dynamo.tasks.check_sync_state",
            "compare_site": site,
            "compare_queue": "*destinationqueue",
            "max_tries": SYNC_TRIES,
        }),
        check,
    );
    let there = |task: &str, extra: Value| {
        let step = json!({"name": task, "site": site, "queue": "*destinationqueue", "keep_parent_times": true});
        json!([with(step, extra)])
    };
    let created_check = check_created.then(|| check.clone());
    json!([
        {"state": "created", "type": "all", "action": send_steps(site_field, migrate.clone(), stub.clone(), created_check)},
        {"state": "updated", "type": "all", "action": send_steps(site_field, migrate, stub, Some(check))},
        {"state": "moved", "type": "all", "action": there("dynamo.tasks.move_paths_on_gpfs", moved)},
        {"state": "deleted", "type": "all", "action": there("dynamo.tasks.delete_paths_from_gpfs", json!({}))}
    ])
}

/// Adds the built-in workflows a database lacks (on every start, so a
/// deleted one comes back and an edited one is left as edited).
pub async fn install_builtins(store: &crate::hub::store::Store) -> Result<(), crate::hub::store::StoreError> {
    for w in builtins() {
        if store.workflow_by_name(&w.name).await?.is_none() {
            store.create_workflow(&w).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_workflows() {
        for w in builtins() {
            let fields = parse_fields(&w.fields).unwrap_or_else(|e| panic!("{}: {e}", w.name));
            parse_rules(&w.filter_rules, &fields).unwrap_or_else(|e| panic!("{}: {e}", w.name));
            // The fields without a default get a value, as a submission
            // must give them (the hub fills the destination queue in).
            let given: Map<String, Value> = fields
                .iter()
                .filter(|f| f.default.is_none())
                .map(|f| (f.name.clone(), json!("b")))
                .collect();
            let values = resolve_fields(
                &fields,
                &given,
                &Known {
                    sites: &["b".into()],
                    queues: &[],
                },
            )
            .unwrap();
            compile(
                &parse_rules(&w.filter_rules, &fields).unwrap(),
                &values,
                "s",
                "default",
                None,
            )
            .unwrap();
        }
    }

    /// `site_sync` routes each change state as the seed's table says: sent
    /// to the destination through premigrate and reverse stub (updated
    /// paths checked first), moves and deletions made there.
    #[test]
    fn site_sync_routes_each_state_as_the_seed_says() {
        let w = builtins().into_iter().find(|w| w.name == "site_sync").unwrap();
        let fields = parse_fields(&w.fields).unwrap();
        let given = json!({"destination": "b", "destinationqueue": "fast"});
        let values = resolve_fields(
            &fields,
            given.as_object().unwrap(),
            &Known {
                sites: &["b".into()],
                queues: &[],
            },
        )
        .unwrap();
        assert_eq!(values["sync_preference"], "newest");
        assert_eq!(values[ROTATE_ON_ERROR], true);
        let rules = compile(
            &parse_rules(&w.filter_rules, &fields).unwrap(),
            &values,
            "a",
            "default",
            None,
        )
        .unwrap();
        let steps = |i: usize| -> Vec<(String, String)> {
            rules[i]
                .actions
                .iter()
                .map(|a| (a.task.rsplit('.').next().unwrap().to_string(), a.queue.clone()))
                .collect()
        };
        let here = |t: &str| (t.to_string(), "a.default#worker".to_string());
        let there = |t: &str| (t.to_string(), "b.fast#worker".to_string());
        let sent = vec![
            here("remove_location_xattrs_for_moved"),
            here("migrate"),
            there("reverse_stub"),
        ];
        assert_eq!(steps(0), sent);
        assert_eq!(steps(1), [vec![here("check_sync_state")], sent].concat());
        assert_eq!(steps(2), [there("move_paths_on_gpfs")]);
        assert_eq!(steps(3), [there("delete_paths_from_gpfs")]);
        let args = |i: usize, j: usize| -> Value {
            serde_json::from_str(&format!("{{{}}}", rules[i].actions[j].kwargs)).unwrap()
        };
        assert_eq!(
            args(0, 1),
            json!({"premigrate": true, "overwrite": true, "abort_missing": true, "max_tries": SYNC_TRIES})
        );
        assert_eq!(
            args(0, 2),
            json!({"hydrate": false, "overwrite": true, "max_tries": SYNC_TRIES})
        );
        assert_eq!(
            args(1, 0),
            json!({"compare_site": "b", "compare_queue": "fast", "sync_preference": "newest", "max_tries": SYNC_TRIES})
        );
        assert_eq!(
            args(2, 0),
            json!({"keep_parent_times": true, "make_parents": true, "relocate": true})
        );
        assert_eq!(args(3, 0), json!({"keep_parent_times": true}));
    }

    #[test]
    fn bad_fields_and_values_name_the_field() {
        let e = parse_fields(&json!([{"name": "x", "label": "X", "type": "float"}])).unwrap_err();
        assert_eq!(e.field, "fields[0].type");
        let e = parse_fields(&json!([{"name": "x", "label": "X"}])).unwrap_err();
        assert!(e.field.starts_with("fields"), "{e}");
        let specs = parse_fields(&json!([
            {"name": "n", "label": "N", "type": "int", "default": 3},
            {"name": "c", "label": "C", "type": "choices", "choices": [{"label": "a", "value": "a"}]},
            {"name": "s", "label": "S", "type": "enum[site]"}
        ]))
        .unwrap();
        let known = Known {
            sites: &["s1".into()],
            queues: &[],
        };
        let given = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(resolve_fields(&specs, &given(json!({})), &known).unwrap()["n"], 3);
        for (v, field) in [
            (json!({"n": "3"}), "fields.n"),
            (json!({"c": "b"}), "fields.c"),
            (json!({"s": "s2"}), "fields.s"),
            (json!({"zz": 1}), "fields.zz"),
        ] {
            assert_eq!(resolve_fields(&specs, &given(v), &known).unwrap_err().field, field);
        }
    }

    #[test]
    fn rules_that_cannot_run_are_refused() {
        let fields = parse_fields(&json!([{"name": "ep", "label": "E", "type": "string"}])).unwrap();
        for (rules, why) in [
            (
                json!([{"state": "all", "type": "all", "action": [{"name": "dynamo.tasks.migrate", "endpoint": "*nope"}]}]),
                "nope",
            ),
            (
                json!([{"state": "all", "type": "blob", "action": [{"name": "dynamo.tasks.migrate"}]}]),
                "type must be",
            ),
            (
                json!([{"state": "all", "type": "all", "action": [{"name": "dynamo.tasks.fly"}]}]),
                "unknown task",
            ),
            (json!([{"state": "all", "action": []}]), "missing field `type`"),
            (json!({"state": "all"}), "invalid type"),
        ] {
            let e = parse_rules(&rules, &fields).unwrap_err().to_string();
            assert!(e.contains(why), "{rules}: {e}");
        }
        parse_rules(
            &json!([{"state": "all", "type": "file", "action": {"name": "dynamo.tasks.migrate", "endpoint": "*ep"}}]),
            &fields,
        )
        .unwrap();
    }
}
