//! `ferry client` against a real hub (`ferry hub serve` on SQLite) and,
//! where a job must run, a real agent on RabbitMQ: the exit statuses say
//! how the job ended, the output is the hub's, and every failure names
//! its cause.

mod common;

use common::hub::{HubSite, PASSWORD, USER, sqlite};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What a run of `ferry client` gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout's lines, each parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", self.stderr)))
            .collect()
    }

    /// stdout as one JSON object.
    fn json(&self) -> Value {
        let mut v = self.json_lines();
        assert_eq!(v.len(), 1, "one JSON line expected:\n{}", self.stdout);
        v.remove(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `ferry client ARGS`, feeding `stdin`, with a home of its own (no
/// user configuration of the machine's leaks in).
fn client(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    client_env(home, args, stdin, &[])
}

/// [`client`], with `env` set.
fn client_env(home: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("client")
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = common::run_within(&mut cmd, stdin, Duration::from_secs(120), None);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A client configuration for `s`, with `key`; its path.
fn config(s: &HubSite, key: &str) -> PathBuf {
    let path = s.dir.path().join("client.conf");
    std::fs::write(
        &path,
        format!(
            "# written by tests/client.rs\n[settings]\nbase_url = {}\nclient_key = {key}\nsite = {}\n",
            s.url, s.site
        ),
    )
    .unwrap();
    path
}

/// `dirs` directories of `per_dir` small files under `root`.
fn tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}\n")).unwrap();
        }
    }
}

#[test]
fn authenticate_prints_a_key_that_then_works_from_a_config_file() {
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    let home = s.dir.path();
    let base = format!("{}/api", s.url);
    let run = client(
        home,
        &[
            "authenticate",
            "--base-url",
            &base,
            "-u",
            USER,
            "-p",
            PASSWORD,
            "-k",
            "tests-login1",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{run}");
    let key = run.stdout.trim().to_string();
    assert_eq!(run.stdout.lines().count(), 1, "{run}");
    let (prefix, secret) = key.split_once('.').unwrap_or_else(|| panic!("not a client key: {run}"));
    assert_eq!((prefix.len(), secret.len()), (9, 32), "{key}");
    // The hub lists it under its name.
    let keys = s.api("GET", "/api/auth/clientkeys/?page_size=0", None, 200);
    assert!(
        keys["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "tests-login1"),
        "{keys}"
    );

    // The key works from a configuration file named with -c.
    let conf = config(&s, &key);
    let run = client(home, &["workflows", "list", "-c", conf.to_str().unwrap()], None);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json_lines().len(), 11, "{run}");

    // A password from standard input (no -p) makes another key.
    let run = client(
        home,
        &["authenticate", "--base-url", &s.url, "-u", USER],
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    assert_eq!(run.code, 0, "{run}");
    assert_ne!(run.stdout.trim(), key);

    // A wrong password: exit 2 with the hub's 401 detail.
    let run = client(
        home,
        &["authenticate", "--base-url", &s.url, "-u", USER, "-p", "wrong-password"],
        None,
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("401 Unauthorized: No active account found with the given credentials"),
        "{run}"
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn a_wrong_client_key_exits_2_with_the_hubs_401_detail() {
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    let conf = config(&s, &s.key());
    let home = s.dir.path();
    let wrong = "AAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let run = client(
        home,
        &["-c", conf.to_str().unwrap(), "--client-key", wrong, "jobs", "list"],
        None,
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "GET {}/api/jobs/?page_size=20: 401 Unauthorized: Invalid API key.",
            s.url
        )),
        "{run}"
    );
    assert_eq!(run.stdout, "");
    // No key at all: exit 2 before any request, saying where to put one.
    let bare = s.dir.path().join("bare.conf");
    std::fs::write(&bare, format!("[settings]\nbase_url = {}\n", s.url)).unwrap();
    let run = client(home, &["-c", bare.to_str().unwrap(), "jobs", "list"], None);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains("no client key") && run.stderr.contains("bare.conf"),
        "{run}"
    );
    // A misspelt key in the file: exit 2 naming the file and line.
    std::fs::write(&bare, format!("[settings]\nbase_url = {}\nclientkey = x\n", s.url)).unwrap();
    let run = client(home, &["-c", bare.to_str().unwrap(), "jobs", "list"], None);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("bare.conf:3: unknown key `clientkey`"), "{run}");
}

#[test]
fn an_unreachable_hub_exits_2_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let port = common::hub::free_port();
    let base = format!("http://127.0.0.1:{port}/api");
    let run = client(
        home.path(),
        &["--base-url", &base, "--client-key", "k.k", "workflows", "list"],
        None,
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "cannot reach the hub at http://127.0.0.1:{port}/api/workflows/?page_size=0: Connection refused"
        )),
        "{run}"
    );
    assert!(run.stderr.contains("is the hub running"), "{run}");
    // And a base URL that is not one.
    let run = client(
        home.path(),
        &["--base-url", "hub:8000", "--client-key", "k.k", "workflows", "list"],
        None,
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("bad base URL \"hub:8000\""), "{run}");
}

#[test]
fn workflows_list_shows_the_builtins_and_import_update_delete_round_trip() {
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    let conf = config(&s, &s.key());
    let c = conf.to_str().unwrap();
    let home = s.dir.path();
    let names = |run: &Run| -> Vec<String> {
        run.json_lines()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect()
    };
    let run = client(home, &["workflows", "list", "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        names(&run),
        [
            "migrate",
            "premigrate",
            "recall",
            "unmanage",
            "reverse_stub",
            "delete_file",
            "send",
            "site_sync",
            "import_to_site_hydrated",
            "import_to_site_dehydrated",
            "bidirectional_sync"
        ],
        "{run}"
    );
    let builtins = run.json_lines();

    // Import from standard input, as `list` prints a workflow (url and id are dropped).
    let mut def = builtins[1].clone();
    def["name"] = "premigrate_copy".into();
    def["label"] = "Pre-Stage copy".into();
    let run = client(
        home,
        &["workflows", "import", "-", "-c", c],
        Some(def.to_string().as_bytes()),
    );
    assert_eq!(run.code, 0, "{run}");
    let made = run.json();
    assert_eq!(made["name"], "premigrate_copy");
    assert_eq!(made["filter_rules"], builtins[1]["filter_rules"]);
    let id = made["id"].as_i64().unwrap();
    assert!(id > 6, "{made}");

    // Update from a file; `list ID` shows the change.
    let change = s.dir.path().join("change.json");
    std::fs::write(&change, r#"{"label": "Renamed", "enabled": false}"#).unwrap();
    let run = client(
        home,
        &[
            "workflows",
            "update",
            &id.to_string(),
            change.to_str().unwrap(),
            "-c",
            c,
        ],
        None,
    );
    assert_eq!(run.code, 0, "{run}");
    let run = client(home, &["workflows", "list", &id.to_string(), "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    let w = run.json();
    assert_eq!(
        (w["label"].as_str(), w["enabled"].as_bool()),
        (Some("Renamed"), Some(false)),
        "{w}"
    );

    // A second import of the same name: the hub's 400, exit 2.
    let run = client(
        home,
        &["workflows", "import", "-", "-c", c],
        Some(def.to_string().as_bytes()),
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("400 Bad Request: name: a workflow called \"premigrate_copy\" exists"),
        "{run}"
    );

    // Delete: gone from the list; deleting again is the hub's 404.
    let run = client(home, &["workflows", "delete", &id.to_string(), "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    let run = client(home, &["workflows", "list", "-c", c], None);
    assert_eq!(names(&run).len(), 11, "{run}");
    let run = client(home, &["workflows", "delete", &id.to_string(), "-c", c], None);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("404 Not Found: No workflow matches the given query."),
        "{run}"
    );
}

#[test]
fn no_wait_prints_the_job_at_once_and_timeout_exits_4_while_the_job_continues() {
    if !common::agent::broker_or_skip() {
        return;
    }
    // A site with no agent: its jobs cannot finish.
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    s.create_site(&s.site);
    let conf = config(&s, &s.key());
    let c = conf.to_str().unwrap();
    let home = s.dir.path();
    let root = s.data().join("tree");
    tree(&root, 1, 3);

    let t0 = Instant::now();
    let run = client(
        home,
        &["migrate", "-r", root.to_str().unwrap(), "--no-wait", "--json", "-c", c],
        None,
    );
    assert_eq!(run.code, 0, "{run}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "--no-wait waited {:?}",
        t0.elapsed()
    );
    let first = run.json();
    assert_eq!(first["state"], "PENDING", "{first}");
    assert_eq!(first["workflow"], "migrate");
    assert_eq!(first["discovery"], "recursive");
    assert_eq!(first["input_paths"][0]["path"], root.to_str().unwrap());
    assert!(run.stderr.contains("no agent consumes queue default"), "{run}");

    let t0 = Instant::now();
    let run = client(
        home,
        &["migrate", "-r", root.to_str().unwrap(), "--timeout", "1", "-c", c],
        None,
    );
    assert_eq!(run.code, 4, "{run}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "--timeout 1 took {:?}",
        t0.elapsed()
    );
    assert!(
        run.stderr
            .contains("is still PENDING after the 1 s timeout; it continues on the hub: `ferry client jobs show"),
        "{run}"
    );
    let id: i64 = run
        .stdout
        .strip_prefix("job ")
        .and_then(|r| r.split_once(' '))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no job summary: {run}"));
    assert!(
        run.stdout.contains(&format!("job {id} PENDING: Dehydrate of ")),
        "{run}"
    );
    // The job is still there, still pending.
    let run = client(home, &["jobs", "show", &id.to_string(), "--json", "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json()["state"], "PENDING", "{run}");

    // The list shows both jobs, newest first.
    let run = client(home, &["jobs", "list", "--json", "--site", &s.site, "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    let ids: Vec<i64> = run.json_lines().iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [id, first["id"].as_i64().unwrap()], "{run}");
    let run = client(home, &["jobs", "list", "--state", "pending", "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout.lines().count(), 3, "a header and two jobs: {run}");
    assert!(
        run.stdout
            .lines()
            .nth(1)
            .unwrap()
            .trim_start()
            .starts_with(&format!("{id}  PENDING")),
        "{run}"
    );

    // Cancel it; pausing it then is refused with the hub's 409 and detail.
    let run = client(home, &["jobs", "cancel", &id.to_string(), "--json", "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    let state = run.json()["state"].as_str().unwrap().to_string();
    assert!(state == "DEQUEUING" || state == "CANCELLED", "{run}");
    let run = client(home, &["jobs", "pause", &id.to_string(), "-c", c], None);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "POST {}/api/jobs/{id}/pause/: 409 Conflict: job {id} is",
            s.url
        )) && run.stderr.contains("only a PENDING or STARTED job can be paused"),
        "{run}"
    );

    // send: the built-in `send` workflow refuses a site the hub does not know.
    let run = client(
        home,
        &["send", root.to_str().unwrap(), "-t", "elsewhere", "-c", c],
        None,
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("400 Bad Request: fields.destinationsite: no site \"elsewhere\""),
        "{run}"
    );
}

#[test]
fn migrate_exits_0_when_the_job_succeeds_and_1_when_a_file_fails() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    let conf = config(&s, &s.key());
    let c = conf.to_str().unwrap();
    let home = s.dir.path();

    // 60 files, recursively: SUCCESS, exit 0, the summary on stdout.
    let root = s.data().join("clean");
    tree(&root, 3, 20);
    let run = client(home, &["migrate", "-r", root.to_str().unwrap(), "-c", c], None);
    assert_eq!(run.code, 0, "{run}\nhub log:\n{}", s.log("hub.log"));
    assert!(run.stdout.contains(" SUCCESS: Dehydrate of "), "{run}");
    assert!(
        run.stdout
            .contains("files: 60 found, 60 processed, 0 skipped, 0 aborted, 0 failed"),
        "{run}"
    );
    let id = run.stdout["job ".len()..].split(' ').next().unwrap().to_string();
    let run = client(home, &["jobs", "show", &id, "--json", "-c", c], None);
    let job = run.json();
    assert_eq!(job["state"], "SUCCESS", "{job}");
    assert_eq!(job["counts"]["files_found"], 60, "{job}");
    assert_eq!(job["counts"]["processed"], 60, "{job}");
    assert_eq!(job["counts"]["failures"], 0, "{job}");

    // Two files without -r (discovery null), premigrated, --json: the job's JSON once it ended.
    let more = s.data().join("more");
    tree(&more, 1, 2);
    let files = [more.join("d0/f000"), more.join("d0/f001")];
    let run = client(
        home,
        &[
            "migrate",
            "-p",
            files[0].to_str().unwrap(),
            files[1].to_str().unwrap(),
            "--json",
            "-c",
            c,
        ],
        None,
    );
    assert_eq!(run.code, 0, "{run}");
    let job = run.json();
    assert_eq!(
        (&job["workflow"], &job["discovery"], &job["state"]),
        (&"premigrate".into(), &Value::Null, &"SUCCESS".into()),
        "{job}"
    );
    assert_eq!(job["counts"]["processed"], 2, "{job}");

    // 20 files, one of them unreadable to the agent: FAILURE, exit 1,
    // and the file named with its errno.
    let bad_root = s.data().join("bad");
    tree(&bad_root, 2, 10);
    let bad = bad_root.join("d1/f004");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o000)).unwrap();
    let run = client(home, &["migrate", "-r", bad_root.to_str().unwrap(), "-c", c], None);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .contains("files: 20 found, 19 processed, 0 skipped, 0 aborted, 1 failed"),
        "{run}"
    );
    assert!(
        run.stdout.contains(&format!("failed {} (EACCES): ", bad.display())),
        "{run}"
    );
    assert!(run.stderr.contains(" ended FAILURE: 1 file(s) failed"), "{run}");
}

#[test]
fn tasktypes_pause_list_and_resume_a_task_type_and_refuse_what_conflicts() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    let conf = config(&s, &s.key());
    let c = conf.to_str().unwrap();
    let home = s.dir.path();
    let delete = "dynamo.tasks.delete_paths_from_gpfs";
    let run = client(
        home,
        &["tasktypes", "pause", delete, "--reason", "array maintenance", "-c", c],
        None,
    );
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.starts_with(&format!("{delete} PAUSED parked ")), "{run}");
    assert!(run.stdout.trim_end().ends_with(": array maintenance"), "{run}");
    let run = client(home, &["tasktypes", "list", "--json", "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    let paused: Vec<String> = run
        .json_lines()
        .iter()
        .filter(|t| t["paused"] == true)
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paused, [delete], "{run}");
    // Paused twice: the hub's 409, exit 2.
    let run = client(home, &["tasktypes", "pause", delete, "-c", c], None);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("409"), "{run}");
    let run = client(home, &["tasktypes", "resume", delete, "-c", c], None);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.starts_with(&format!("{delete} running parked ")), "{run}");
    let run = client(home, &["tasktypes", "resume", "dynamo.tasks.nope", "-c", c], None);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("404"), "{run}");
}

#[test]
fn on_a_terminal_migrate_draws_a_progress_bar_while_it_waits() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    // Small batches: the job runs for a few seconds, long enough for the
    // bar's 200 ms ticks.
    s.batch_size(5);
    let conf = config(&s, &s.key());
    let root = s.data().join("tty");
    tree(&root, 10, 60);
    // `script` gives the client a terminal on its stdin, stdout and stderr
    // and copies what it draws to its own stdout.
    let line = format!(
        "{} client migrate -r {} -c {}",
        env!("CARGO_BIN_EXE_ferry"),
        root.display(),
        conf.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("HOME", s.dir.path())
        .env("TERM", "xterm");
    let out: Output = common::run_within(&mut cmd, None, Duration::from_secs(120), None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\nhub log:\n{}", s.log("hub.log"));
    let id = text
        .split("job ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap_or_default()
        .to_string();
    // The bar: its frame and its message, redrawn while the job ran.
    let drawn = text.matches(&format!("job {id} ")).count();
    assert!(drawn >= 3, "the bar was drawn {drawn} times: {text:?}");
    assert!(text.contains("] job "), "no bar frame: {text:?}");
    assert!(text.contains("/600 files"), "no file counts in the bar: {text:?}");
    // Then the summary, as without a terminal.
    assert!(
        text.contains("files: 600 found, 600 processed, 0 skipped, 0 aborted, 0 failed"),
        "{text:?}"
    );
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_checks_the_certificate_against_the_system_roots_unless_no_verify() {
    let have = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::require(have, "the HTTPS test needs the openssl command") {
        return;
    }
    // A CA, and a certificate it signed for 127.0.0.1.
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        d,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=ferry test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        d,
        &[
            &["req"][..],
            &ec,
            &["-subj", "/CN=127.0.0.1", "-keyout", "hub.key", "-out", "hub.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "hub.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "hub.crt",
        ],
    );
    let tls = format!(
        "tls_certificate = {}\ntls_key = {}",
        d.join("hub.crt").display(),
        d.join("hub.key").display()
    );
    let mut s = HubSite::new(sqlite(), 0, &tls);
    s.url = s.url.replace("http://", "https://");
    s.start_hub();
    let conf = config(&s, &s.key());
    let c = conf.to_str().unwrap();
    let home = s.dir.path();
    let list = ["workflows", "list", "-c", c];

    // The CA is not among the system's roots: refused, and said why.
    let run = client(home, &list, None);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(&format!("cannot reach the hub at {}/api/", s.url)),
        "{run}"
    );
    assert!(
        run.stderr.contains("certificate") && run.stderr.contains("--no-verify"),
        "{run}"
    );
    // With the CA among the roots (SSL_CERT_FILE, read by rustls-native-certs): accepted.
    let run = client_env(home, &list, None, &[("SSL_CERT_FILE", &d.join("ca.crt"))]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json_lines().len(), 11, "{run}");
    // Without checking, by flag or by configuration: accepted.
    let run = client(home, &[&list[..], &["-D"]].concat(), None);
    assert_eq!(run.code, 0, "{run}");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("api_secure_verify = false\n");
    std::fs::write(&conf, text).unwrap();
    let run = client(home, &list, None);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json_lines().len(), 11, "{run}");
}
