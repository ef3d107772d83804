//! `gitea_update_issue`: labels, assignees, state and a comment on one issue, in one call.
//!
//! # What it does, in order
//!
//! 1. Reads the issue (`GET .../issues/{index}`; E3006 when it does not exist) and, when labels
//!    are named, the repository's labels. Every label — by name (a JSON string) or by id (a JSON
//!    integer) — must exist in the repository, or the call is refused with E3003 **before
//!    anything changes** (Gitea itself would silently ignore an unknown name or id on add).
//!    The one exception: with `create_missing_labels: {color, description?}`, an `add_labels`
//!    entry *by name* that the repository lacks is to be created with that colour (`rrggbb` or
//!    `#rrggbb`); an unknown id, or an unknown name in `remove_labels`, is still refused.
//! 2. Works out the changes against what the issue has now: labels to create, labels to add
//!    that it lacks, labels to remove that it carries, the assignee set (`assignees`
//!    **replaces the whole set**; `[]` clears it), the state, the comment.
//! 3. With `dry_run`, stops here and reports those changes (`labels_created` names the labels
//!    it would create) and the issue as it would be.
//! 4. Otherwise applies them: `DELETE .../labels/{id}` per removed label, `POST
//!    /repos/{owner}/{repo}/labels` per label to create, `POST .../labels` with the ids to add
//!    (Gitea answers with the full set), `PATCH .../issues/{index}` for assignees and state
//!    (Gitea answers 201), `POST .../comments`; then reads the issue again so the output is
//!    what Gitea holds.
//!
//! Gitea has no transactions: when a step fails, the error's `details.step` names it and
//! `details.applied` lists the steps already done. Two calls creating the same missing label
//! at once may both create it (Gitea allows duplicate names); a caller that runs calls in
//! parallel on one repository serialises those that may create labels (triage does).
//!
//! The call's target is the issue, `owner/repo#N`: its breaker, and its provenance record,
//! name the issue it changes.
//!
//! The contract says `idempotent: false` because a comment posted twice is two comments; every
//! other field converges (a second identical call changes nothing), so a call without a
//! comment may carry an idempotency key and be retried.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{client, issue_target};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::gitea::{CreateLabelOption, EditIssueOption, Gitea, Issue, Label, LabelRef, NAME_PATTERN};
use crate::tools::{ToolContext, TypedTool};

/// Most labels or assignees one call may name.
pub const MAX_NAMES: usize = 50;
/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 65_536;

/// `open` or `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueState {
    /// Open.
    Open,
    /// Closed.
    Closed,
}

impl IssueState {
    fn as_str(self) -> &'static str {
        match self {
            IssueState::Open => "open",
            IssueState::Closed => "closed",
        }
    }
}

/// Arguments of `gitea_update_issue`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Repository owner (else the configured default).
    #[serde(default)]
    pub owner: Option<String>,
    /// Repository name (else the configured default).
    #[serde(default)]
    pub repo: Option<String>,
    /// Issue number.
    pub number: u64,
    /// Labels to add, by name or id.
    #[serde(default)]
    pub add_labels: Vec<LabelRef>,
    /// Labels to remove, by name or id.
    #[serde(default)]
    pub remove_labels: Vec<LabelRef>,
    /// The whole new set of assignee logins (replaces; `[]` clears).
    #[serde(default)]
    pub assignees: Option<Vec<String>>,
    /// A comment to post.
    #[serde(default)]
    pub comment: Option<String>,
    /// New state.
    #[serde(default)]
    pub state: Option<IssueState>,
    /// Create the labels `add_labels` names (by name) that the repository lacks.
    #[serde(default)]
    pub create_missing_labels: Option<NewLabels>,
}

/// How to create the labels a call adds by name that the repository lacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLabels {
    /// Colour, `rrggbb` or `#rrggbb`.
    pub color: String,
    /// Description of each label created.
    #[serde(default)]
    pub description: Option<String>,
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition<T> {
    /// Before the call.
    pub from: T,
    /// After the call (or, in a dry run, what it would be).
    pub to: T,
}

/// What the call changed, or in a dry run would change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Label names created in the repository (each is also in `labels_added`).
    pub labels_created: Vec<String>,
    /// Label names added.
    pub labels_added: Vec<String>,
    /// Label names removed.
    pub labels_removed: Vec<String>,
    /// The assignee set, when it changes.
    pub assignees: Option<Transition<Vec<String>>>,
    /// The state, when it changes.
    pub state: Option<Transition<String>>,
    /// Whether a comment is posted.
    pub comment: bool,
}

impl Changes {
    fn any(&self) -> bool {
        !self.labels_added.is_empty()
            || !self.labels_removed.is_empty()
            || self.assignees.is_some()
            || self.state.is_some()
            || self.comment
    }
}

/// The issue after the call (or as it would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueView {
    /// Title.
    pub title: String,
    /// `open` or `closed`.
    pub state: String,
    /// Label names.
    pub labels: Vec<String>,
    /// Assignee logins.
    pub assignees: Vec<String>,
    /// Web page.
    pub html_url: String,
}

/// Result of `gitea_update_issue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Owner.
    pub owner: String,
    /// Repository.
    pub repo: String,
    /// Issue number.
    pub number: u64,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Whether anything changed (or would).
    pub changed: bool,
    /// What changed (or would).
    pub changes: Changes,
    /// The issue after the call, as Gitea holds it (in a dry run: as it would be).
    pub issue: IssueView,
    /// The new comment's id.
    pub comment_id: Option<i64>,
    /// The new comment's address.
    pub comment_url: Option<String>,
}

/// The `gitea_update_issue` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GiteaUpdateIssue;

impl TypedTool for GiteaUpdateIssue {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        let label_list = json!({
            "type": "array",
            "items": {"type": ["string", "integer"], "minLength": 1, "maxLength": 200, "minimum": 1},
            "maxItems": MAX_NAMES,
            "description": "Label names (strings) or ids (integers); each must exist in the repository."
        });
        let mut props = super::schema::repo_properties();
        for (k, v) in [
            ("number", json!({"type": "integer", "minimum": 1, "description": "Issue number."})),
            ("add_labels", label_list.clone()),
            ("remove_labels", label_list),
            (
                "assignees",
                json!({"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN}, "maxItems": MAX_NAMES,
                       "description": "Replaces the WHOLE assignee set with these logins; [] removes every assignee."}),
            ),
            (
                "comment",
                json!({"type": "string", "minLength": 1, "maxLength": MAX_COMMENT_CHARS, "description": "Comment to post (not idempotent: each call posts one)."}),
            ),
            ("state", json!({"enum": ["open", "closed"]})),
            (
                "create_missing_labels",
                json!({
                    "type": "object",
                    "properties": {
                        "color": {"type": "string", "pattern": "^#?[0-9A-Fa-f]{6}$", "description": "Colour of each label created, rrggbb or #rrggbb."},
                        "description": {"type": "string", "maxLength": 200}
                    },
                    "required": ["color"],
                    "additionalProperties": false,
                    "description": "Create the add_labels named by name that the repository lacks (else they are refused, E3003); dry_run reports them in labels_created."
                }),
            ),
        ] {
            props.insert(k.into(), v);
        }
        let names = json!({"type": "array", "items": {"type": "string"}});
        ContractSpec {
            name: "gitea_update_issue",
            category: Category::Network,
            description: "Change one Gitea issue: add or remove labels (by name or id, optionally creating missing ones), replace the whole assignee set, open or close it, post a comment; dry_run reports the changes without making them.",
            input_schema: json!({ "type": "object", "properties": props, "required": ["number"], "additionalProperties": false }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "owner": {"type": "string"},
                    "repo": {"type": "string"},
                    "number": {"type": "integer", "minimum": 1},
                    "dry_run": {"type": "boolean"},
                    "changed": {"type": "boolean"},
                    "changes": {
                        "type": "object",
                        "properties": {
                            "labels_created": names,
                            "labels_added": names,
                            "labels_removed": names,
                            "assignees": {"type": ["object", "null"], "properties": {"from": names, "to": names},
                                          "required": ["from", "to"], "additionalProperties": false},
                            "state": {"type": ["object", "null"], "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                                      "required": ["from", "to"], "additionalProperties": false},
                            "comment": {"type": "boolean"}
                        },
                        "required": ["labels_created", "labels_added", "labels_removed", "assignees", "state", "comment"],
                        "additionalProperties": false
                    },
                    "issue": {
                        "type": "object",
                        "properties": {
                            "title": {"type": "string"},
                            "state": {"enum": ["open", "closed"]},
                            "labels": names,
                            "assignees": names,
                            "html_url": {"type": "string"}
                        },
                        "required": ["title", "state", "labels", "assignees", "html_url"],
                        "additionalProperties": false
                    },
                    "comment_id": {"type": ["integer", "null"]},
                    "comment_url": {"type": ["string", "null"]}
                },
                "required": ["owner", "repo", "number", "dry_run", "changed", "changes", "issue", "comment_id", "comment_url"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: false, destructive: false, idempotent: false, open_world: true },
            risk: Risk::Medium,
            default_timeout: Duration::from_secs(60),
            dry_run: true,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        issue_target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let gitea = client(ctx)?;
        let (owner, repo) = gitea.repo_of(input.owner.as_deref(), input.repo.as_deref())?;
        let plan = plan(gitea.as_ref(), &owner, &repo, &input).await?;
        if ctx.dry_run || !plan.changes.any() {
            return Ok(Output {
                owner,
                repo,
                number: input.number,
                dry_run: ctx.dry_run,
                changed: plan.changes.any(),
                issue: plan.would_be,
                changes: plan.changes,
                comment_id: None,
                comment_url: None,
            });
        }
        apply(gitea.as_ref(), &owner, &repo, input, plan).await
    }
}

/// What a call will do, worked out before anything changes.
struct Plan {
    changes: Changes,
    /// Labels to create (then add), with the colour and description to give them.
    create: Vec<CreateLabelOption>,
    add_ids: Vec<i64>,
    remove_ids: Vec<i64>,
    edit: EditIssueOption,
    comment: Option<String>,
    would_be: IssueView,
}

fn refuse(message: String, details: Value) -> Error {
    Error::new(ErrorCode::InvalidArguments, message).with_details(details)
}

async fn plan(gitea: &dyn Gitea, owner: &str, repo: &str, input: &Input) -> Result<Plan> {
    if let Some(same) = input.add_labels.iter().find(|l| input.remove_labels.contains(l)) {
        return Err(refuse(
            format!("gitea_update_issue: label `{same}` is both added and removed"),
            json!({ "field": "add_labels", "label": same }),
        ));
    }
    let issue = gitea.get_issue(owner, repo, input.number).await?;
    let repo_labels = if input.add_labels.is_empty() && input.remove_labels.is_empty() {
        vec![]
    } else {
        gitea.list_labels(owner, repo).await?.items
    };
    let (add, missing) = match &input.create_missing_labels {
        Some(_) => resolve_or_create(&input.add_labels, &repo_labels, owner, repo)?,
        None => (resolve(&input.add_labels, &repo_labels, owner, repo)?, vec![]),
    };
    let remove = resolve(&input.remove_labels, &repo_labels, owner, repo)?;
    if let Some(l) = add.iter().find(|a| remove.iter().any(|r| r.id == a.id)) {
        return Err(refuse(
            format!("gitea_update_issue: label `{}` is both added and removed", l.name),
            json!({ "field": "add_labels", "label": l.name }),
        ));
    }
    let has = |id: i64| issue.labels.iter().any(|l| l.id == id);
    let mut add_ids = Vec::new();
    let mut labels_added = Vec::new();
    for l in &add {
        if !has(l.id) && !add_ids.contains(&l.id) {
            add_ids.push(l.id);
            labels_added.push(l.name.clone());
        }
    }
    let create: Vec<CreateLabelOption> = match &input.create_missing_labels {
        Some(new) => missing
            .iter()
            .map(|name| CreateLabelOption {
                name: name.clone(),
                color: format!("#{}", new.color.trim_start_matches('#').to_ascii_lowercase()),
                description: new.description.clone(),
                exclusive: None,
            })
            .collect(),
        None => vec![],
    };
    labels_added.extend(missing.iter().cloned());
    let mut remove_ids = Vec::new();
    let mut labels_removed = Vec::new();
    for l in &remove {
        if has(l.id) && !remove_ids.contains(&l.id) {
            remove_ids.push(l.id);
            labels_removed.push(l.name.clone());
        }
    }

    let current_assignees = issue.assignee_logins();
    let mut edit = EditIssueOption::default();
    let assignees = match &input.assignees {
        Some(wanted) => {
            let mut dedup: Vec<String> = Vec::new();
            for w in wanted {
                if !dedup.contains(w) {
                    dedup.push(w.clone());
                }
            }
            let before: BTreeSet<&String> = current_assignees.iter().collect();
            let after: BTreeSet<&String> = dedup.iter().collect();
            if before == after {
                None
            } else {
                edit.assignees = Some(dedup.clone());
                Some(Transition { from: current_assignees.clone(), to: dedup })
            }
        }
        None => None,
    };
    let state = match input.state {
        Some(s) if s.as_str() != issue.state => {
            edit.state = Some(s.as_str().to_owned());
            Some(Transition { from: issue.state.clone(), to: s.as_str().to_owned() })
        }
        _ => None,
    };

    let mut labels: Vec<String> =
        issue.labels.iter().filter(|l| !remove_ids.contains(&l.id)).map(|l| l.name.clone()).collect();
    labels.extend(labels_added.iter().cloned());
    let would_be = IssueView {
        title: issue.title.clone(),
        state: state.as_ref().map_or_else(|| issue.state.clone(), |s| s.to.clone()),
        labels,
        assignees: assignees.as_ref().map_or(current_assignees, |a| a.to.clone()),
        html_url: issue.html_url.clone(),
    };
    Ok(Plan {
        changes: Changes {
            labels_created: missing,
            labels_added,
            labels_removed,
            assignees,
            state,
            comment: input.comment.is_some(),
        },
        create,
        add_ids,
        remove_ids,
        edit,
        comment: input.comment.clone(),
        would_be,
    })
}

/// Each reference as a repository label; an unknown one refuses the whole call (E3003).
fn resolve(refs: &[LabelRef], labels: &[Label], owner: &str, repo: &str) -> Result<Vec<Label>> {
    refs.iter()
        .map(|r| {
            let found = match r {
                LabelRef::Id(id) => labels.iter().find(|l| l.id == *id),
                LabelRef::Name(name) => labels.iter().find(|l| &l.name == name),
            };
            found.cloned().ok_or_else(|| {
                let shown = match r {
                    LabelRef::Id(id) => format!("label_id: {id}"),
                    LabelRef::Name(n) => format!("name: {n}"),
                };
                let available: Vec<&str> = labels.iter().take(100).map(|l| l.name.as_str()).collect();
                Error::new(ErrorCode::ToolFailed, format!("label does not exist [{shown}] in {owner}/{repo}"))
                    .with_details(json!({ "label": r, "owner": owner, "repo": repo, "available": available }))
            })
        })
        .collect()
}

/// As [`resolve`] for labels to add, except that a name the repository lacks is returned, once,
/// among the labels to create instead of refusing the call; an unknown id still refuses it.
fn resolve_or_create(
    refs: &[LabelRef],
    labels: &[Label],
    owner: &str,
    repo: &str,
) -> Result<(Vec<Label>, Vec<String>)> {
    let mut found = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for r in refs {
        match r {
            LabelRef::Name(name) if !labels.iter().any(|l| &l.name == name) => {
                if !missing.contains(name) {
                    missing.push(name.clone());
                }
            }
            _ => found.extend(resolve(std::slice::from_ref(r), labels, owner, repo)?),
        }
    }
    Ok((found, missing))
}

async fn apply(gitea: &dyn Gitea, owner: &str, repo: &str, input: Input, plan: Plan) -> Result<Output> {
    let n = input.number;
    let mut applied: Vec<&'static str> = Vec::new();
    let at = |step: &'static str, applied: &[&'static str], e: Error| -> Error {
        let mut details = match &e.details {
            Value::Object(_) => e.details.clone(),
            Value::Null => json!({}),
            other => json!({ "cause": other }),
        };
        details["step"] = json!(step);
        details["applied"] = json!(applied);
        e.with_details(details)
    };
    for id in &plan.remove_ids {
        gitea.remove_label(owner, repo, n, *id).await.map_err(|e| at("remove_labels", &applied, e))?;
    }
    if !plan.remove_ids.is_empty() {
        applied.push("remove_labels");
    }
    let mut add_ids = plan.add_ids.clone();
    for opt in &plan.create {
        let label = gitea.create_label(owner, repo, opt).await.map_err(|e| at("create_labels", &applied, e))?;
        add_ids.push(label.id);
    }
    if !plan.create.is_empty() {
        applied.push("create_labels");
    }
    if !add_ids.is_empty() {
        let refs: Vec<LabelRef> = add_ids.iter().map(|id| LabelRef::Id(*id)).collect();
        gitea.add_labels(owner, repo, n, &refs).await.map_err(|e| at("add_labels", &applied, e))?;
        applied.push("add_labels");
    }
    if plan.edit != EditIssueOption::default() {
        gitea.edit_issue(owner, repo, n, &plan.edit).await.map_err(|e| at("edit_issue", &applied, e))?;
        applied.push("edit_issue");
    }
    let mut comment_id = None;
    let mut comment_url = None;
    if let Some(body) = &plan.comment {
        let c = gitea.create_comment(owner, repo, n, body).await.map_err(|e| at("comment", &applied, e))?;
        applied.push("comment");
        comment_id = Some(c.id);
        comment_url = Some(c.html_url);
    }
    let after: Issue = gitea.get_issue(owner, repo, n).await.map_err(|e| at("read_back", &applied, e))?;
    Ok(Output {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        number: n,
        dry_run: false,
        changed: true,
        changes: plan.changes,
        issue: IssueView {
            labels: after.label_names(),
            assignees: after.assignee_logins(),
            title: after.title,
            state: after.state,
            html_url: after.html_url,
        },
        comment_id,
        comment_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Typed;

    /// Proves the contract is honest: mutating, open-world, not idempotent (comments), medium
    /// risk, with dry-run support.
    #[test]
    fn contract_states_its_effects() {
        let t = Typed::<GiteaUpdateIssue>::new().expect("compiles");
        let c = crate::tools::Tool::contract(&t);
        assert!(!c.spec().annotations.read_only && c.spec().annotations.open_world && !c.spec().annotations.idempotent);
        assert_eq!(c.spec().risk, Risk::Medium);
        assert!(c.spec().dry_run);
        assert!(c.spec().description.contains("whole assignee set"));
        assert!(c.validate_input(&json!({"number": 1, "add_labels": ["kind/bug", 7]})).is_ok());
        assert!(c.validate_input(&json!({"number": 1, "add_labels": [true]})).is_err());
        assert!(c.validate_input(&json!({"number": 0})).is_err());
        assert!(c.validate_input(&json!({"number": 1, "state": "merged"})).is_err());
        assert!(c.validate_input(&json!({"number": 1, "comment": ""})).is_err());
    }

    /// Proves label references resolve by id and by name, and an unknown one is refused with
    /// E3003 naming it.
    #[test]
    fn labels_resolve_by_id_and_name() {
        let labels = vec![
            Label { id: 1, name: "kind/bug".into(), ..Label::default() },
            Label { id: 2, name: "prio/high".into(), ..Label::default() },
        ];
        let got = resolve(&[LabelRef::Name("prio/high".into()), LabelRef::Id(1)], &labels, "o", "r").expect("ok");
        assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), vec![2, 1]);
        let e = resolve(&[LabelRef::Name("nope".into())], &labels, "o", "r").expect_err("unknown");
        assert_eq!(e.code, ErrorCode::ToolFailed);
        assert!(e.message.contains("label does not exist [name: nope]"), "{}", e.message);
    }

    /// Proves that with `create_missing_labels` an unknown name is to be created (once), while
    /// an unknown id is still refused; and that the contract takes the option and targets the issue.
    #[test]
    fn missing_names_are_to_be_created_unknown_ids_refused() {
        let labels = vec![Label { id: 1, name: "kind/bug".into(), ..Label::default() }];
        let refs = [LabelRef::Name("house/ezra".into()), LabelRef::Id(1), LabelRef::Name("house/ezra".into())];
        let (found, missing) = resolve_or_create(&refs, &labels, "o", "r").expect("ok");
        assert_eq!(found.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(missing, vec!["house/ezra"]);
        let e = resolve_or_create(&[LabelRef::Id(9)], &labels, "o", "r").expect_err("unknown id");
        assert!(e.message.contains("label does not exist [label_id: 9]"), "{}", e.message);

        let t = Typed::<GiteaUpdateIssue>::new().expect("compiles");
        let c = crate::tools::Tool::contract(&t);
        let ok = json!({"number": 1, "add_labels": ["x"], "create_missing_labels": {"color": "#c5def5"}});
        assert!(c.validate_input(&ok).is_ok());
        for bad in [json!({"color": "red"}), json!({}), json!({"color": "c5def5", "colour": "x"})] {
            assert!(c.validate_input(&json!({"number": 1, "create_missing_labels": bad})).is_err(), "{bad}");
        }
        assert_eq!(
            crate::tools::Tool::target(&t, &json!({"owner": "uni", "repo": "fleet", "number": 3})),
            "uni/fleet#3"
        );
    }
}
