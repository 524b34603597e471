//! `ferry client`: flags and configuration into calls of the hub's REST
//! API ([`ferry::client`]), the answers onto stdout, a progress bar onto
//! stderr, and how the job ended into the exit status.

use super::exit::Failure;
use clap::{ArgGroup, Args, Subcommand};
use ferry::client::config::parse_timeout;
use ferry::client::{
    ClientConfig, ClientError, ClientOptions, Credentials, DEFAULT_BASE_URL, HubClient, Job, JobAction, JobFilter,
    JobView, Seen, Submission, WaitEnd, WaitOptions, path_literal, wait_for_job,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Run workflows and manage jobs on a hub, from any host that can reach
/// its API (the shape of Ngenea's `ngclient`).
///
/// `ferry client authenticate` makes a client key; the other commands send
/// it with every request. Settings come from the `[settings]` section of
/// /etc/ferry/client.conf, then ~/.config/ferry/client.conf (whose keys
/// win), or only from the file given with -c; flags override them. Keys:
/// base_url, client_key, site, queue, wait, timeout, hydrate,
/// api_secure_verify.
///
/// migrate, premigrate, recall and send submit a job and wait for it to
/// end, with a progress bar on a terminal, then print it. Exit status: 0
/// the job succeeded; 1 it ended otherwise (FAILURE, CANCELLED); 2 bad
/// usage, configuration, credentials, or an error answer from the hub; 4
/// --timeout passed first (the job goes on running on the hub). See
/// docs/client.md.
#[derive(Args)]
pub struct ClientCmd {
    #[command(flatten)]
    conn: Connection,

    #[command(subcommand)]
    command: ClientSub,
}

/// Where the hub is and how to talk to it (every command; they may come
/// before or after the command's name).
#[derive(Args)]
struct Connection {
    /// The hub's API, e.g. https://hub.example.com:8000/api (a URL
    /// without a path gets /api) [default: base_url in the configuration,
    /// else http://localhost:8000/api].
    #[arg(long, global = true, value_name = "URL", help_heading = "Global options")]
    base_url: Option<String>,

    /// Read only this configuration file (not /etc/ferry/client.conf
    /// and ~/.config/ferry/client.conf).
    #[arg(
        short = 'c',
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    config: Option<PathBuf>,

    /// The client key to authenticate with [default: client_key in the
    /// configuration]. Visible in the process list: prefer the file
    /// (mode 0600).
    #[arg(long, global = true, value_name = "KEY", help_heading = "Global options")]
    client_key: Option<String>,

    /// Do not check the hub's TLS certificate (a hub with a self-signed
    /// certificate; better: give its CA in SSL_CERT_FILE). Same as
    /// api_secure_verify = false.
    #[arg(short = 'D', long, global = true, help_heading = "Global options")]
    no_verify: bool,

    /// Machine output: the hub's JSON (one object per line) instead of
    /// a summary, and no progress bar.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
}

#[derive(Subcommand)]
enum ClientSub {
    Authenticate(AuthenticateCmd),
    Migrate(MigrateCmd),
    /// Copy files to their endpoint and keep them on disk (the premigrate
    /// workflow).
    ///
    /// The same as `migrate -p`: the files stay whole and are recorded as
    /// premigrated, so a later migrate only has to stub them.
    Premigrate(SubmitArgs),
    /// Bring migrated files' data back from their endpoint (the recall
    /// workflow).
    ///
    /// Stubs get their data again, checked against the hash recorded at
    /// migration; files that are whole are skipped. Without -r each PATH
    /// is recalled itself; with -r the site's agents walk each directory.
    Recall(SubmitArgs),
    Send(SendCmd),
    #[command(subcommand)]
    Workflows(WorkflowsCmd),
    #[command(subcommand)]
    Jobs(JobsCmd),
    #[command(subcommand)]
    Tasktypes(TasktypesCmd),
}

/// Pause or resume one task type on every agent (`dynamo.tasks.delete`,
/// say, before maintenance of what it touches): queued tasks of that type
/// wait, parked, until it is resumed; running ones finish.
#[derive(Subcommand)]
enum TasktypesCmd {
    /// Every task type: running or PAUSED, tasks parked, since, by whom,
    /// why (with --json, the hub's objects, one per line).
    List,
    /// Pause a task type cluster-wide.
    Pause {
        /// The task's name (`dynamo.tasks.delete_paths_from_gpfs`).
        name: String,
        /// Why, shown beside it on the hub's web page and API.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused task type: its parked tasks go back to their queues.
    Resume {
        /// The task's name.
        name: String,
    },
}

/// Make a client key: log in with a user's name and password (or an
/// access token) and print the new key.
///
/// Save the key as `client_key` in ~/.config/ferry/client.conf (mode
/// 0600) or pass it with --client-key. Without -p the password is asked
/// for on the terminal, or read from the first line of standard input.
/// Reads no configuration file (as ngclient): give --base-url and -D here
/// if the defaults do not fit.
#[derive(Args)]
#[command(group(ArgGroup::new("who").required(true).args(["username", "access_token"])))]
struct AuthenticateCmd {
    /// The hub user to log in as.
    #[arg(short = 'u', long, value_name = "USERNAME")]
    username: Option<String>,

    /// The user's password (visible in the process list and the shell's
    /// history: prefer the prompt).
    #[arg(short = 'p', long, value_name = "PASSWORD", requires = "username")]
    password: Option<String>,

    /// An access token (JWT) from POST /api/auth/token/, instead of a
    /// user and password.
    #[arg(short = 'T', long, value_name = "TOKEN")]
    access_token: Option<String>,

    /// A unique name for the key, shown in the hub's list of keys
    /// [default: ferry-client-<random uuid>].
    #[arg(short = 'k', long, value_name = "NAME")]
    key_name: Option<String>,
}

/// What every submission takes.
#[derive(Args)]
struct SubmitArgs {
    /// Files or directories, absolute or relative to the current
    /// directory, as the site's nodes see them (shell globs are expanded
    /// here, on this host).
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,

    /// The site to run on (for send: the source) [default: site in the
    /// configuration].
    #[arg(short = 's', long, value_name = "SITE")]
    site: Option<String>,

    /// The site's queue to run on [default: queue in the configuration,
    /// else the workflow's preferred queue, else default].
    #[arg(short = 'q', long, value_name = "QUEUE")]
    queue: Option<String>,

    /// Walk directories and work on every file in them (discovery
    /// `recursive`); without it the PATHs themselves are worked on
    /// (discovery null).
    #[arg(short = 'r', long)]
    recursive: bool,

    #[command(flatten)]
    wait: WaitArgs,
}

/// A wait timeout in seconds (0: none), as a flag takes it.
#[derive(Clone, Copy, Debug)]
struct TimeoutArg(Option<Duration>);

/// Whether and how long to wait for the job.
#[derive(Args)]
struct WaitArgs {
    /// Print the job as submitted and exit 0 at once; the job runs on
    /// (wait = false in the configuration).
    #[arg(short = 'd', long, overrides_with = "wait")]
    no_wait: bool,

    /// Wait for the job to end, even if the configuration says wait =
    /// false.
    #[arg(long)]
    wait: bool,

    /// Stop waiting after SECONDS and exit with status 4; the job goes
    /// on running on the hub (0: no limit) [default: timeout in the
    /// configuration, else no limit].
    #[arg(long, value_name = "SECONDS", value_parser = |s: &str| parse_timeout(s).map(TimeoutArg).map_err(|e| e.to_string()))]
    timeout: Option<TimeoutArg>,
}

/// Copy files to their endpoint and turn them into stubs (the migrate
/// workflow, shown as Dehydrate).
///
/// The site's agents copy each file to the endpoint whose root holds it,
/// verify the copy, then punch the data out of the local file, keeping
/// its size and times. Files already migrated are skipped. With -p the
/// data stays on disk (premigrate). Without -r each PATH is worked on
/// itself; with -r every file under each directory.
#[derive(Args)]
struct MigrateCmd {
    #[command(flatten)]
    submit: SubmitArgs,

    /// Keep the data on disk (the premigrate workflow).
    #[arg(short = 'p', long)]
    premigrate: bool,
}

/// Send files from one site to another through their endpoint (the send
/// workflow).
///
/// Submits the workflow `send` with the fields destinationsite,
/// destinationqueue and hydrate, as Ngenea's built-in send declares them.
/// ferry's hub has it built in; a hub without one refuses the job (400).
#[derive(Args)]
struct SendCmd {
    #[command(flatten)]
    submit: SubmitArgs,

    /// The site to send the files to.
    #[arg(short = 't', long, value_name = "TARGET")]
    target: String,

    /// The target site's queue [default: the source queue, else default].
    #[arg(short = 'Q', long, value_name = "QUEUE")]
    target_queue: Option<String>,

    /// Hydrate the files on the target (whole files, not stubs)
    /// [default: hydrate in the configuration, else false].
    #[arg(short = 'H', long, overrides_with = "no_hydrate")]
    hydrate: bool,

    /// Make stubs on the target, whatever the configuration says.
    #[arg(long)]
    no_hydrate: bool,
}

/// List, import, change and delete workflows (JSON, one per line).
#[derive(Subcommand)]
enum WorkflowsCmd {
    /// Print every workflow, or the one with ID, as JSON lines (the hub's
    /// objects: `ferry client workflows list > workflows.jsonl` is a
    /// backup).
    List {
        /// A workflow's id.
        id: Option<i64>,
    },
    /// Create workflows from FILE (`-`: standard input): a JSON object, an
    /// array of them, or JSON lines as `list` prints them. `url` and `id`
    /// are dropped. Stops at the first the hub refuses; the ones before
    /// it are created. Prints each created workflow.
    Import {
        /// The definitions.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Change workflow ID with the fields in FILE (`-`: standard input),
    /// one JSON object: only the fields given change, but `fields` and
    /// `filter_rules` are replaced whole. `url` and `id` are dropped; the
    /// name cannot change.
    Update {
        /// The workflow's id.
        id: i64,
        /// The changes.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Delete workflow ID (its jobs keep its name).
    Delete {
        /// The workflow's id.
        id: i64,
    },
}

/// List, show, cancel, pause, resume and resubmit jobs.
#[derive(Subcommand)]
enum JobsCmd {
    List(JobsListCmd),
    /// Show a job: its state and counts, and the first failed files.
    Show {
        /// The job's id.
        id: i64,
    },
    /// Cancel a job: its queued tasks are refused, running ones finish;
    /// it ends CANCELLED.
    Cancel {
        /// The job's id.
        id: i64,
    },
    /// Pause a job: tasks not started yet wait until it is resumed.
    Pause {
        /// The job's id.
        id: i64,
    },
    /// Resume a paused job.
    Resume {
        /// The job's id.
        id: i64,
    },
    /// Run a finished job again.
    Resubmit {
        /// The job's id.
        id: i64,
        /// Only the paths that failed.
        #[arg(long)]
        failed_only: bool,
    },
}

/// List jobs, newest first: one line each (id, state, created, workflow,
/// site, name), or the hub's JSON with --json.
#[derive(Args)]
struct JobsListCmd {
    /// Only jobs in this state (PENDING, STARTED, SUCCESS, FAILURE,
    /// DEQUEUING, CANCELLED); repeat for several.
    #[arg(long = "state", value_name = "STATE")]
    states: Vec<String>,

    /// Only jobs of this workflow.
    #[arg(long, value_name = "NAME")]
    workflow: Option<String>,

    /// Only jobs on this site.
    #[arg(long, value_name = "SITE")]
    site: Option<String>,

    /// Only jobs on this queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,

    /// At most N jobs (0: all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,
}

/// Runs `ferry client ...`.
pub fn run(c: ClientCmd) -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::setup(format!("cannot start the runtime: {e}")))?
        .block_on(dispatch(c))
}

async fn dispatch(c: ClientCmd) -> Result<(), Failure> {
    let ClientCmd { conn, command } = c;
    match command {
        ClientSub::Authenticate(a) => authenticate(&conn, a).await,
        ClientSub::Migrate(m) => {
            let workflow = if m.premigrate { "premigrate" } else { "migrate" };
            submit(&Session::open(&conn)?, workflow, m.submit, Map::new()).await
        }
        ClientSub::Premigrate(a) => submit(&Session::open(&conn)?, "premigrate", a, Map::new()).await,
        ClientSub::Recall(a) => submit(&Session::open(&conn)?, "recall", a, Map::new()).await,
        ClientSub::Send(a) => send(&Session::open(&conn)?, a).await,
        ClientSub::Workflows(w) => workflows(&Session::open(&conn)?, w).await,
        ClientSub::Jobs(j) => jobs(&Session::open(&conn)?, j).await,
        ClientSub::Tasktypes(t) => tasktypes(&Session::open(&conn)?, t).await,
    }
}

/// The configuration and a client that sends the client key.
struct Session {
    hub: HubClient,
    config: ClientConfig,
    json: bool,
}

impl Session {
    fn open(conn: &Connection) -> Result<Session, Failure> {
        let config = ClientConfig::load(conn.config.as_deref()).map_err(Failure::setup)?;
        let key = conn
            .client_key
            .clone()
            .or_else(|| config.client_key.clone())
            .ok_or_else(|| {
                Failure::setup(format!(
                    "no client key: give --client-key KEY, or set client_key in [settings] of {} (`ferry client authenticate` makes one)",
                    config_places(conn)
                ))
            })?;
        let hub = HubClient::new(&ClientOptions {
            base_url: conn
                .base_url
                .clone()
                .or_else(|| config.base_url.clone())
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
            verify_tls: !conn.no_verify && config.verify_tls.unwrap_or(true),
            credentials: Credentials::ClientKey(key),
        })
        .map_err(failed)?;
        Ok(Session {
            hub,
            config,
            json: conn.json,
        })
    }
}

/// The configuration files a setting may come from, for messages.
fn config_places(conn: &Connection) -> String {
    match &conn.config {
        Some(f) => f.display().to_string(),
        None => {
            let user = ClientConfig::user_file().map_or_else(String::new, |u| format!(" or {}", u.display()));
            format!("{}{user}", ferry::client::config::GLOBAL_FILE)
        }
    }
}

/// A failed call as the user sees it: the error, and what to do about it.
fn failed(e: ClientError) -> Failure {
    let hint = match &e {
        ClientError::Unreachable { reason, .. } if reason.to_lowercase().contains("certificate") => {
            " (a self-signed hub: give its CA certificate in SSL_CERT_FILE, or skip the check with --no-verify)"
        }
        ClientError::Unreachable { .. } => " (is the hub running, and is --base-url or base_url right?)",
        ClientError::Status { status: 401, .. } => {
            " (check the client key: --client-key or client_key; `ferry client authenticate` makes one)"
        }
        ClientError::Status {
            status: 404, detail, ..
        } if detail.starts_with("No endpoint") => " (this hub does not serve this call)",
        _ => "",
    };
    Failure::setup(format!("{e}{hint}"))
}

async fn authenticate(conn: &Connection, a: AuthenticateCmd) -> Result<(), Failure> {
    if conn.config.is_some() {
        eprintln!("ferry: authenticate reads no configuration file; give --base-url (and -D) on the command line");
    }
    let options = |credentials| ClientOptions {
        base_url: conn.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
        verify_tls: !conn.no_verify,
        credentials,
    };
    let token = match (a.access_token, a.username) {
        (Some(t), _) => t,
        (None, Some(user)) => {
            let password = match a.password {
                Some(p) => p,
                None => read_password(&user)?,
            };
            let hub = HubClient::new(&options(Credentials::None)).map_err(failed)?;
            hub.tokens(&user, &password).await.map_err(failed)?.access
        }
        (None, None) => unreachable!("clap requires -u or -T"),
    };
    let hub = HubClient::new(&options(Credentials::Bearer(token))).map_err(failed)?;
    let name = a
        .key_name
        .unwrap_or_else(|| format!("ferry-client-{}", uuid::Uuid::new_v4()));
    let key = hub.create_client_key(&name).await.map_err(failed)?;
    match conn.json {
        true => println!("{}", key.raw.get()),
        false => println!("{}", key.api_key),
    }
    Ok(())
}

/// The password: asked for on the terminal without echo, or the first
/// line of standard input when that is not a terminal.
fn read_password(user: &str) -> Result<String, Failure> {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut echo_off = false;
    if tty {
        eprint!("{user}'s password: ");
        echo_off = std::process::Command::new("stty")
            .arg("-echo")
            .status()
            .is_ok_and(|s| s.success());
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if echo_off {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.map_err(|e| Failure::setup(format!("cannot read the password: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Failure::setup("no password given"));
    }
    Ok(password.to_string())
}

async fn send(s: &Session, a: SendCmd) -> Result<(), Failure> {
    let target_queue = a
        .target_queue
        .or_else(|| a.submit.queue.clone())
        .or_else(|| s.config.queue.clone())
        .unwrap_or_else(|| "default".into());
    let hydrate = match (a.hydrate, a.no_hydrate) {
        (true, _) => true,
        (_, true) => false,
        _ => s.config.hydrate.unwrap_or(false),
    };
    let fields = json!({"destinationsite": a.target, "destinationqueue": target_queue, "hydrate": hydrate});
    let Value::Object(fields) = fields else {
        unreachable!("an object")
    };
    submit(s, "send", a.submit, fields).await
}

/// Submits `workflow` on the paths, then waits for the job (unless told
/// not to) and prints it; the exit status says how it ended.
async fn submit(s: &Session, workflow: &str, a: SubmitArgs, fields: Map<String, Value>) -> Result<(), Failure> {
    let site = a
        .site
        .or_else(|| s.config.site.clone())
        .ok_or_else(|| Failure::setup("no site: give -s SITE, or set site in [settings] of the configuration"))?;
    let paths = a
        .paths
        .iter()
        .map(|p| path_literal(p).map_err(|e| Failure::setup(format!("{}: {e}", p.display()))))
        .collect::<Result<Vec<_>, _>>()?;
    let submission = Submission {
        workflow: workflow.to_string(),
        site,
        queue: a.queue.or_else(|| s.config.queue.clone()),
        paths,
        discovery: a.recursive.then(|| "recursive".to_string()),
        fields,
    };
    let job = s.hub.submit(&submission).await.map_err(failed)?;
    if job.view.queue_nodes_online == Some(0) {
        eprintln!(
            "ferry: no agent consumes queue {} of site {} now: job {} waits until one does",
            job.view.queue, job.view.site, job.view.id
        );
    }
    let wait = match (a.wait.no_wait, a.wait.wait) {
        (true, _) => false,
        (_, true) => true,
        _ => s.config.wait.unwrap_or(true),
    };
    if !wait {
        print_job(s, &job).await;
        return Ok(());
    }
    let timeout = a.wait.timeout.map_or(s.config.timeout.flatten(), |t| t.0);
    let id = job.view.id;
    let bar = Bar::new(id, !s.json && std::io::stderr().is_terminal());
    let options = WaitOptions {
        timeout,
        ..WaitOptions::default()
    };
    let end = wait_for_job(&s.hub, job, &options, |seen| bar.show(seen)).await;
    bar.finish();
    match end {
        Err(e) => Err(Failure::setup(format!(
            "lost sight of job {id}, which goes on on the hub: {}",
            failed(e).message
        ))),
        Ok(WaitEnd::Ended(job)) => {
            print_job(s, &job).await;
            ended(&job.view)
        }
        Ok(WaitEnd::TimedOut(job)) => {
            print_job(s, &job).await;
            Err(Failure::timed_out(format!(
                "job {id} is still {} after the {} s timeout; it continues on the hub: `ferry client jobs show {id}`",
                job.view.state,
                timeout.map_or(0.0, |t| t.as_secs_f64())
            )))
        }
    }
}

/// Ok for a job that succeeded; status 1 for one that ended otherwise.
fn ended(job: &JobView) -> Result<(), Failure> {
    if job.succeeded() {
        return Ok(());
    }
    let counts = job.counts.clone().unwrap_or_default();
    let mut why = Vec::new();
    if counts.failures > 0 {
        why.push(format!("{} file(s) failed", counts.failures));
    }
    if counts.tasks_failed > 0 && counts.failures == 0 {
        why.push(format!("{} task(s) failed", counts.tasks_failed));
    }
    let why = match why.is_empty() {
        true => String::new(),
        false => format!(": {}", why.join(", ")),
    };
    Err(Failure::paths(format!("job {} ended {}{why}", job.id, job.state)))
}

/// A progress bar on stderr while a job runs (only on a terminal).
struct Bar(Option<ProgressBar>, i64);

impl Bar {
    fn new(id: i64, show: bool) -> Bar {
        let bar = show.then(|| {
            let b = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr_with_hz(5));
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Bar(bar, id)
    }

    fn show(&self, seen: Seen<'_>) {
        if let Some(b) = &self.0 {
            let p = seen.progress;
            b.set_position((p.percent * 10.0).clamp(0.0, 1000.0) as u64);
            b.set_message(format!(
                "job {} {} {:.1}% {}/{} files",
                self.1, seen.state, p.percent, p.files_done, p.files_found
            ));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// The failed files a summary lists.
const FAILED_SHOWN: usize = 10;

/// Prints a job: its JSON with --json, else a summary (with its first
/// failed files once it has ended).
async fn print_job(s: &Session, job: &Job) {
    if s.json {
        println!("{}", job.raw.get());
        return;
    }
    let v = &job.view;
    println!("job {} {}: {}", v.id, v.state, v.friendly_name);
    let c = v.counts.clone().unwrap_or_default();
    let runtime = v.runtime.map_or_else(String::new, |r| format!("; {r:.1} s"));
    let found = match v.discovery {
        Some(_) => format!("{} found, ", c.files_found),
        None => String::new(),
    };
    println!(
        "  files{}: {found}{} processed, {} skipped, {} aborted, {} failed{runtime}",
        if v.is_final() { "" } else { " so far" },
        c.processed,
        c.skipped,
        c.aborted,
        c.failures
    );
    if c.failures + c.aborted == 0 || !v.is_final() {
        return;
    }
    match s.hub.failed_files(v.id, FAILED_SHOWN).await {
        Ok(files) => {
            for f in &files {
                let code = f.code.as_ref().map_or_else(String::new, |c| format!(" ({c})"));
                let state = if f.state == "failures" { "failed" } else { &f.state };
                println!("  {state} {}{code}: {}", f.path, f.reasons());
            }
            let listed = usize::try_from(c.failures + c.aborted).unwrap_or(usize::MAX);
            if listed > files.len() {
                println!(
                    "  ... {} more: GET {}jobstats/?job={}",
                    listed - files.len(),
                    s.hub.base_url(),
                    v.id
                );
            }
        }
        Err(e) => eprintln!("ferry: cannot list the job's failed files: {e}"),
    }
}

async fn jobs(s: &Session, c: JobsCmd) -> Result<(), Failure> {
    let (id, action) = match c {
        JobsCmd::List(l) => return list_jobs(s, l).await,
        JobsCmd::Show { id } => {
            let job = s.hub.job(id).await.map_err(failed)?;
            print_job(s, &job).await;
            return Ok(());
        }
        JobsCmd::Cancel { id } => (id, JobAction::Cancel),
        JobsCmd::Pause { id } => (id, JobAction::Pause),
        JobsCmd::Resume { id } => (id, JobAction::Resume),
        JobsCmd::Resubmit { id, failed_only } => (id, JobAction::Resubmit { failed_only }),
    };
    let job = s.hub.job_action(id, action).await.map_err(failed)?;
    print_job(s, &job).await;
    Ok(())
}

async fn list_jobs(s: &Session, l: JobsListCmd) -> Result<(), Failure> {
    let filter = JobFilter {
        states: l.states,
        workflow: l.workflow,
        site: l.site,
        queue: l.queue,
        limit: l.limit,
    };
    let jobs = s.hub.jobs(&filter).await.map_err(failed)?;
    if s.json {
        for j in &jobs {
            println!("{}", j.raw.get());
        }
        return Ok(());
    }
    println!(
        "{:>7}  {:<10} {:<19}  {:<12} {:<12} NAME",
        "ID", "STATE", "CREATED", "WORKFLOW", "SITE"
    );
    for j in &jobs {
        let v = &j.view;
        // 2026-12-04T23:36:02.896541Z → 2026-12-04 23:36:02
        let created: String = v
            .created
            .as_deref()
            .unwrap_or("")
            .replacen('T', " ", 1)
            .chars()
            .take(19)
            .collect();
        println!(
            "{:>7}  {:<10} {:<19}  {:<12} {:<12} {}",
            v.id,
            v.state,
            created,
            v.workflow.as_deref().unwrap_or("-"),
            v.site,
            v.friendly_name
        );
    }
    Ok(())
}

async fn tasktypes(s: &Session, c: TasktypesCmd) -> Result<(), Failure> {
    let line = |raw: &serde_json::value::RawValue| {
        let t: Value = serde_json::from_str(raw.get()).unwrap_or_default();
        let text = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        let parked = t["parked"].as_u64().map_or("-".to_string(), |n| n.to_string());
        match t["paused"].as_bool() == Some(true) {
            true => format!(
                "{} PAUSED parked {parked} since {} by {}: {}",
                text("name"),
                text("since"),
                text("paused_by"),
                text("reason")
            ),
            false => format!("{} running parked {parked}", text("name")),
        }
    };
    let shown = match c {
        TasktypesCmd::List => s.hub.tasktypes().await.map_err(failed)?,
        TasktypesCmd::Pause { name, reason } => {
            vec![s.hub.tasktype_action(&name, Some(&reason)).await.map_err(failed)?]
        }
        TasktypesCmd::Resume { name } => vec![s.hub.tasktype_action(&name, None).await.map_err(failed)?],
    };
    for t in shown {
        match s.json {
            true => println!("{}", t.get()),
            false => println!("{}", line(&t)),
        }
    }
    Ok(())
}

async fn workflows(s: &Session, c: WorkflowsCmd) -> Result<(), Failure> {
    match c {
        WorkflowsCmd::List { id: Some(id) } => println!("{}", s.hub.workflow(id).await.map_err(failed)?.get()),
        WorkflowsCmd::List { id: None } => {
            for w in s.hub.workflows().await.map_err(failed)? {
                println!("{}", w.get());
            }
        }
        WorkflowsCmd::Import { file } => {
            for (i, definition) in definitions(&file)?.iter().enumerate() {
                let w = s.hub.create_workflow(definition).await.map_err(|e| {
                    let f = failed(e);
                    Failure::setup(format!("{}: workflow {}: {}", file.display(), i + 1, f.message))
                })?;
                println!("{}", w.get());
            }
        }
        WorkflowsCmd::Update { id, file } => {
            let mut all = definitions(&file)?;
            if all.len() != 1 {
                return Err(Failure::setup(format!(
                    "{}: holds {} workflows; update takes one JSON object",
                    file.display(),
                    all.len()
                )));
            }
            let w = s.hub.update_workflow(id, &all.remove(0)).await.map_err(failed)?;
            println!("{}", w.get());
        }
        WorkflowsCmd::Delete { id } => {
            s.hub.delete_workflow(id).await.map_err(failed)?;
            if !s.json {
                println!("workflow {id} deleted");
            }
        }
    }
    Ok(())
}

/// The workflow definitions in `file` (`-`: stdin): JSON objects, alone,
/// in arrays or as lines, without the `url` and `id` the hub sets.
fn definitions(file: &Path) -> Result<Vec<Value>, Failure> {
    let shown = file.display();
    let mut text = String::new();
    let read = match file.as_os_str() == "-" {
        true => std::io::stdin().read_to_string(&mut text),
        false => std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text)),
    };
    read.map_err(|e| Failure::setup(format!("{shown}: cannot read: {e}")))?;
    let mut out = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .enumerate()
    {
        let value = value.map_err(|e| Failure::setup(format!("{shown}: not JSON: {e}")))?;
        let items = match value {
            Value::Array(a) => a,
            v => vec![v],
        };
        for item in items {
            let Value::Object(mut m) = item else {
                return Err(Failure::setup(format!("{shown}: item {} is not a JSON object", i + 1)));
            };
            m.remove("url");
            m.remove("id");
            out.push(Value::Object(m));
        }
    }
    if out.is_empty() {
        return Err(Failure::setup(format!("{shown}: no workflow in it")));
    }
    Ok(out)
}
