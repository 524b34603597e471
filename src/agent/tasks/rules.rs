//! A workflow's filter rules, as a discovery task receives them: which
//! discovered paths each rule takes (`state`, `type`, `include`,
//! `exclude`) and the chain of actions it runs on them.
//!
//! Semantics follow the seed (docs/agent.md): `all`/`all` rules take every
//! path in addition to other rules; `default`/`default` rules take the paths
//! no explicit rule took; a rule set cannot hold both. Include and exclude
//! globs match whole paths; runtime patterns replace a rule's own; site
//! patterns are appended unless the rule ignores them. Action values that
//! begin with `*` are runtime fields, replaced by the caller's `fields`.

use crate::agent::celery::{Signature, SignatureOptions};
use crate::batch::BatchLimits;
use crate::config::queue_name;
use crate::entry::FileType;
use crate::rules::{Filter, Verdict};
use crate::task::ArgumentError;
use crate::task::args::kwargs_with;
use crate::task::names::function_of;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A filter rule as written in a workflow.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The discovery state it takes (`all`, `default`, `created`, ...).
    pub state: String,
    /// `file`, `directory` (`folder`), `symlink` (`link`), `all` or `default`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The actions, run one after another on the same batch.
    pub action: OneOrMany,
    /// Globs limiting the rule to matching paths.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of paths the rule leaves alone.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Do not append the site's include patterns.
    #[serde(default)]
    pub ignore_site_includes: bool,
    /// Do not append the site's exclude patterns.
    #[serde(default)]
    pub ignore_site_excludes: bool,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// An action list, or one action written alone (the seed does both).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A list.
    Many(Vec<serde_json::Map<String, Value>>),
    /// A single object.
    One(serde_json::Map<String, Value>),
}

/// Patterns and fields that apply to every rule of one submission.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Context {
    /// Runtime include patterns (replace each rule's own).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Runtime exclude patterns (replace each rule's own).
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// The site's include patterns (appended).
    #[serde(default)]
    pub site_includes: Vec<String>,
    /// The site's exclude patterns (appended).
    #[serde(default)]
    pub site_excludes: Vec<String>,
    /// Runtime field values for `*name` references.
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
}

/// The seed's batch settings as arguments of a discovery task: a hub that
/// keeps each site's settings passes them with the task. Those absent keep
/// the agent's own (`[settings]`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct BatchArgs {
    /// Most paths per batch.
    #[serde(default)]
    pub file_batch_size: Option<usize>,
    /// Most file data per batch, decimal GB (0: no limit).
    #[serde(default)]
    pub file_batch_gb: Option<f64>,
    /// Grow the batch size with the paths discovered.
    #[serde(default)]
    pub enable_auto_file_batch_sizing: Option<bool>,
}

impl BatchArgs {
    /// `limits` with the settings these arguments give.
    pub fn apply(&self, mut limits: BatchLimits) -> Result<BatchLimits, ArgumentError> {
        let invalid = |name: &str, message: &str| ArgumentError::Invalid {
            name: name.into(),
            message: message.into(),
        };
        if let Some(n) = self.file_batch_size {
            if n == 0 {
                return Err(invalid("file_batch_size", "must be 1 or more"));
            }
            limits.max_paths = n;
        }
        if let Some(gb) = self.file_batch_gb {
            if !gb.is_finite() || gb < 0.0 {
                return Err(invalid("file_batch_gb", "must be a number of GB, 0 or more"));
            }
            limits.max_data_bytes = BatchLimits::from_seed(1, gb, false).max_data_bytes;
        }
        if let Some(b) = self.enable_auto_file_batch_sizing {
            limits.dynamic = b;
        }
        Ok(limits)
    }
}

/// The rule arguments every discovery task takes: the rules, the
/// submission's patterns and fields, and where actions go by default.
#[derive(Deserialize)]
pub struct RuleArgs {
    /// The workflow's filter rules (`filter_rules`, or `rules`).
    #[serde(default, alias = "rules")]
    pub filter_rules: Vec<RuleSpec>,
    /// Runtime and site patterns, runtime fields.
    #[serde(flatten)]
    pub ctx: Context,
    /// Site of actions that name none (default: the agent's).
    #[serde(default)]
    pub site: Option<String>,
    /// Queue of actions that name none (default: the task's own).
    #[serde(default)]
    pub queue: Option<String>,
}

impl RuleArgs {
    /// Compiles the rules, routing actions by default to `site` and
    /// `queue`; a task with no rules would do nothing, so that is an error.
    pub fn compile(&self, site: &str, queue: &str) -> Result<Vec<Rule>, RuleError> {
        let routing = Routing {
            site: self.site.clone().unwrap_or_else(|| site.to_string()),
            queue: self.queue.clone().unwrap_or_else(|| queue.to_string()),
        };
        let rules = compile(&self.filter_rules, &self.ctx, &routing)?;
        if rules.is_empty() {
            return Err(RuleError::NoRules);
        }
        Ok(rules)
    }
}

/// A rule set that cannot be used, with the rule and action at fault
/// (counted from 1, as a person reading the workflow counts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Nothing would take the discovered paths.
    #[error("no filter_rules: the discovered paths would go nowhere")]
    NoRules,
    /// The seed forbids mixing the two catch-all kinds.
    #[error("a rule set cannot hold both `all` and `default` rules")]
    AllAndDefault,
    /// One rule is wrong.
    #[error("rule {rule}: {problem}")]
    Rule {
        /// Which.
        rule: usize,
        /// What is wrong.
        problem: String,
    },
    /// One action of a rule is wrong.
    #[error("rule {rule}, action {action}: {problem}")]
    Action {
        /// Which rule.
        rule: usize,
        /// Which of its actions.
        action: usize,
        /// What is wrong.
        problem: String,
    },
}

impl RuleError {
    fn rule(rule: usize, problem: impl Into<String>) -> RuleError {
        RuleError::Rule {
            rule,
            problem: problem.into(),
        }
    }
}

/// Which paths a rule takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Explicit,
    All,
    Default,
}

/// A compiled rule: its matcher and its resolved action chain.
#[derive(Debug)]
pub struct Rule {
    kind: Kind,
    state: String,
    types: Option<FileType>,
    filter: Filter,
    /// The actions, first to run first, each with its queue.
    pub actions: Vec<Action>,
}

impl Rule {
    /// The rule's include/exclude filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }
}

/// One resolved action.
#[derive(Clone, Debug)]
pub struct Action {
    /// Task name.
    pub task: String,
    /// The queue it is sent to, `<site>.<queue>#<function>`.
    pub queue: String,
    /// Its keyword arguments besides `paths` and `jobid`, as a JSON object
    /// without the braces (empty when there are none).
    pub kwargs: String,
}

impl Action {
    /// The action as a chain signature, with `jobid` added.
    pub fn signature(&self, jobid: Option<&RawValue>) -> Signature {
        let text = kwargs_with(&self.kwargs, jobid, None);
        Signature {
            task: self.task.clone(),
            kwargs: Some(RawValue::from_string(text).expect("valid JSON")),
            options: Some(SignatureOptions {
                queue: Some(self.queue.clone()),
            }),
        }
    }
}

/// Where actions go unless they say: the site and queue of the call.
#[derive(Clone, Debug)]
pub struct Routing {
    /// The site (the agent's own unless the task says).
    pub site: String,
    /// The queue (`default` unless the task says).
    pub queue: String,
}

/// Compiles a rule set. Errors name the rule (from 1) and the problem.
pub fn compile(specs: &[RuleSpec], ctx: &Context, routing: &Routing) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let n = i + 1;
        let kind = match (spec.state.as_str(), spec.kind.as_str()) {
            ("all", "all") => Kind::All,
            ("default", "default") => Kind::Default,
            ("default", _) | (_, "default") => {
                return Err(RuleError::rule(n, "`default` must be both its state and its type"));
            }
            _ => Kind::Explicit,
        };
        let types = match spec.kind.as_str() {
            "all" | "default" => None,
            "file" => Some(FileType::File),
            "directory" | "folder" => Some(FileType::Directory),
            "symlink" | "link" => Some(FileType::Symlink),
            other => {
                return Err(RuleError::rule(
                    n,
                    format!("type must be file, directory, symlink, all or default, not {other:?}"),
                ));
            }
        };
        let mut include = ctx.include.clone().unwrap_or_else(|| spec.include.clone());
        if !spec.ignore_site_includes {
            include.extend(ctx.site_includes.iter().cloned());
        }
        let mut exclude = ctx.exclude.clone().unwrap_or_else(|| spec.exclude.clone());
        if !spec.ignore_site_excludes {
            exclude.extend(ctx.site_excludes.iter().cloned());
        }
        let filter = Filter::new(&include, &exclude).map_err(|e| RuleError::rule(n, e.to_string()))?;
        let list = match &spec.action {
            OneOrMany::Many(v) => v.clone(),
            OneOrMany::One(a) => vec![a.clone()],
        };
        if list.is_empty() {
            return Err(RuleError::rule(n, "no actions"));
        }
        let actions = list
            .into_iter()
            .enumerate()
            .map(|(j, a)| {
                resolve(a, ctx, routing).map_err(|problem| RuleError::Action {
                    rule: n,
                    action: j + 1,
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        rules.push(Rule {
            kind,
            state: spec.state.clone(),
            types,
            filter,
            actions,
        });
    }
    if rules.iter().any(|r| r.kind == Kind::All) && rules.iter().any(|r| r.kind == Kind::Default) {
        return Err(RuleError::AllAndDefault);
    }
    Ok(rules)
}

fn resolve(mut a: serde_json::Map<String, Value>, ctx: &Context, routing: &Routing) -> Result<Action, String> {
    for v in a.values_mut() {
        if let Value::String(s) = v
            && let Some(field) = s.strip_prefix('*')
        {
            *v = ctx
                .fields
                .get(field)
                .cloned()
                .ok_or_else(|| format!("runtime field `{field}` is not among the given fields"))?;
        }
    }
    let take_str = |a: &mut serde_json::Map<String, Value>, k: &str| -> Result<Option<String>, String> {
        match a.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("`{k}` must be a string, not {v}")),
        }
    };
    let task = take_str(&mut a, "name")?.ok_or("an action needs a `name`")?;
    let site = take_str(&mut a, "site")?.unwrap_or_else(|| routing.site.clone());
    let queue = take_str(&mut a, "queue")?.unwrap_or_else(|| routing.queue.clone());
    for k in ["paths", "jobid"] {
        if a.contains_key(k) {
            return Err(format!("`{k}` is set by discovery, not by the action"));
        }
    }
    let kwargs = serde_json::to_string(&a).expect("json");
    Ok(Action {
        queue: queue_name(&site, &queue, function_of(&task)),
        task,
        kwargs: kwargs[1..kwargs.len() - 1].to_string(),
    })
}

/// The rules that take a path of type `file_type` in discovery state
/// `state`, by index; `all` rules are added to explicit matches, `default`
/// rules take what nothing explicit took.
pub fn matching(rules: &[Rule], path: &[u8], file_type: FileType, state: &str, out: &mut Vec<usize>) {
    out.clear();
    let takes = |r: &Rule| r.filter.verdict(path) == Verdict::Keep;
    for (i, r) in rules.iter().enumerate() {
        let hit = match r.kind {
            Kind::All => true,
            Kind::Default => false,
            Kind::Explicit => (r.state == "all" || r.state == state) && r.types.is_none_or(|t| t == file_type),
        };
        if hit && takes(r) {
            out.push(i);
        }
    }
    if !out.iter().any(|&i| rules[i].kind == Kind::Explicit) {
        for (i, r) in rules.iter().enumerate() {
            if r.kind == Kind::Default && takes(r) {
                out.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str, ctx: &Context) -> Result<Vec<Rule>, RuleError> {
        let specs: Vec<RuleSpec> = serde_json::from_str(json).unwrap();
        compile(
            &specs,
            ctx,
            &Routing {
                site: "s1".into(),
                queue: "default".into(),
            },
        )
    }

    #[test]
    fn all_explicit_and_default() {
        let r = rules(
            r#"[{"state":"all","type":"file","action":[{"name":"dynamo.tasks.migrate","endpoint":"*ep"}],"exclude":["*.tmp"]},
                {"state":"default","type":"default","action":{"name":"dynamo.tasks.stat_paths","site":"s2","queue":"q"}}]"#,
            &Context {
                fields: serde_json::from_str(r#"{"ep":"archive"}"#).unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r[0].actions[0].queue, "s1.default#worker");
        assert_eq!(r[0].actions[0].kwargs, r#""endpoint":"archive""#);
        assert_eq!(r[1].actions[0].queue, "s2.q#worker");
        let mut out = Vec::new();
        matching(&r, b"/a/x", FileType::File, "all", &mut out);
        assert_eq!(out, [0]);
        matching(&r, b"/a/x.tmp", FileType::File, "all", &mut out);
        assert_eq!(out, [1]);
        matching(&r, b"/a", FileType::Directory, "all", &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn runtime_patterns_replace_and_site_patterns_append() {
        let ctx = Context {
            exclude: Some(vec!["*.bak".into()]),
            site_excludes: vec!["*.cache".into()],
            ..Default::default()
        };
        let r = rules(
            r#"[{"state":"all","type":"all","action":[{"name":"x"}],"exclude":["*.tmp"]}]"#,
            &ctx,
        )
        .unwrap();
        let mut out = Vec::new();
        for (p, want) in [(&b"/a.tmp"[..], 1), (b"/a.bak", 0), (b"/a.cache", 0)] {
            matching(&r, p, FileType::File, "all", &mut out);
            assert_eq!(out.len(), want, "{}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn bad_rule_sets() {
        let ctx = Context::default();
        for (json, why) in [
            (r#"[{"state":"all","type":"all","action":[]}]"#, "no actions"),
            (
                r#"[{"state":"all","type":"blob","action":[{"name":"x"}]}]"#,
                "type must be",
            ),
            (
                r#"[{"state":"all","type":"file","action":[{"name":"x","e":"*nope"}]}]"#,
                "runtime field `nope`",
            ),
            (
                r#"[{"state":"all","type":"file","action":[{"site":"x"}]}]"#,
                "needs a `name`",
            ),
            (
                r#"[{"state":"all","type":"all","action":[{"name":"x"}]},{"state":"default","type":"default","action":[{"name":"x"}]}]"#,
                "both",
            ),
            (
                r#"[{"state":"default","type":"file","action":[{"name":"x"}]}]"#,
                "both its state",
            ),
            (
                r#"[{"state":"all","type":"all","action":[{"name":"x","paths":[]}]}]"#,
                "set by discovery",
            ),
        ] {
            let e = rules(json, &ctx).unwrap_err().to_string();
            assert!(e.contains(why), "{json}: {e}");
        }
    }
}
