//! Fixtures for hub tests: a fresh database on each engine (an SQLite
//! file, a new PostgreSQL database on the machine's server), so every
//! store test runs on both.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// The machine's PostgreSQL (trust auth); `scripts/test` starts it.
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// A database for one test; a PostgreSQL one is dropped afterwards.
pub struct TestDb {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// Its URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
        }
    }
}

/// An empty SQLite database.
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        engine: "sqlite",
        url: format!("sqlite://{}/hub.db", dir.path().display()),
        _dir: Some(dir),
        pg_name: None,
    }
}

/// An empty PostgreSQL database, or a failure under CI (a loud skip
/// elsewhere) when the server does not answer.
pub fn postgres() -> Option<TestDb> {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(2)).is_ok();
    if !super::require(
        up,
        "hub store tests need PostgreSQL on 127.0.0.1:5432 (scripts/test starts it)",
    ) {
        return None;
    }
    let name = format!("hub_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(TestDb {
        engine: "postgres",
        url: format!("{POSTGRES}/{name}"),
        _dir: None,
        pg_name: Some(name),
    })
}

/// One fresh database per engine.
pub fn both() -> Vec<TestDb> {
    let mut v = vec![sqlite()];
    v.extend(postgres());
    v
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One site driven by a hub: a `ferry hub serve` process on `db`, and
/// agents of one site (distinct node names) sharing `data/` and a
/// directory endpoint `archive`. Agents run without CAP_DAC_OVERRIDE and
/// CAP_DAC_READ_SEARCH, so a mode-000 file is unreadable to them as to
/// any user, although they run as root.
pub struct HubSite {
    /// The site name (unique per test).
    pub site: String,
    /// Scratch: configurations, logs, `data/`, `archive/`, `keys/`.
    pub dir: tempfile::TempDir,
    /// The hub's URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The database.
    pub db: TestDb,
    /// Extra `[hub]` lines.
    pub hub_settings: String,
    /// The hub process.
    pub hub: Option<std::process::Child>,
    /// Agent processes by index.
    pub agents: Vec<Option<std::process::Child>>,
    /// Per agent, a directory bind-mounted over `data/` in a mount
    /// namespace of the agent's own ([`HubSite::place_agent`]).
    pub binds: Vec<Option<std::path::PathBuf>>,
    /// Per agent, whether it runs with every capability root has, as a
    /// production agent does ([`HubSite::place_agent`]).
    pub full_root: Vec<bool>,
    /// The endpoint `archive`'s settings but its `root` (a directory
    /// `archive/` when `None`), for configurations written after it is set.
    pub archive: Option<String>,
}

/// The user the fixtures create.
pub const USER: &str = "admin";
/// Its password.
pub const PASSWORD: &str = "hub-test-password";

impl HubSite {
    /// A site with `agents` agents (not started) and a hub on `db`.
    pub fn new(db: TestDb, agents: usize, hub_settings: &str) -> HubSite {
        let dir = tempfile::tempdir().unwrap();
        for d in ["data", "archive"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let site = format!("h{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let port = free_port();
        let s = HubSite {
            site,
            url: format!("http://127.0.0.1:{port}"),
            db,
            hub_settings: hub_settings.to_string(),
            hub: None,
            agents: (0..agents).map(|_| None).collect(),
            binds: (0..agents).map(|_| None).collect(),
            full_root: vec![false; agents],
            archive: None,
            dir,
        };
        for i in 0..agents {
            s.write_config(&format!("agent{i}.conf"), &format!("node_name = ferry@{}-n{i}", s.site));
        }
        s.write_config("hub.conf", "");
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["hub", "adduser", "--admin", USER, "--config"])
            .arg(s.dir.path().join("hub.conf"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "adduser: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    /// Adds `lines` to every agent's `[settings]` (before they start).
    pub fn agent_settings(&self, lines: &str) {
        for i in 0..self.agents.len() {
            self.agent_settings_of(i, lines);
        }
    }

    /// Sets the extra `[settings]` lines of agent `i` to `lines` (before
    /// it starts).
    pub fn agent_settings_of(&self, i: usize, lines: &str) {
        self.write_config(
            &format!("agent{i}.conf"),
            &format!("node_name = ferry@{}-n{i}\n{lines}", self.site),
        );
    }

    /// Makes agent `i` an agent of site `site` whose endpoint `archive`
    /// has its `root` at `root`, with `lines` added to its `[settings]`;
    /// with `bind`, it runs in a mount namespace of its own where `bind`
    /// is mounted over `data/` (as a cluster mounts its filesystem where
    /// another cluster mounts its own). It runs with every capability of
    /// root, as a production agent does. Before it starts.
    pub fn place_agent(
        &mut self,
        i: usize,
        site: &str,
        root: &std::path::Path,
        bind: Option<&std::path::Path>,
        lines: &str,
    ) {
        self.binds[i] = bind.map(std::path::Path::to_path_buf);
        self.full_root[i] = true;
        self.write_config_of(
            &format!("agent{i}.conf"),
            site,
            root,
            &format!("node_name = ferry@{site}-n{i}\n{lines}"),
        );
    }

    fn write_config(&self, name: &str, extra: &str) {
        self.write_config_of(name, &self.site, &self.data(), extra);
    }

    fn write_config_of(&self, name: &str, site: &str, root: &std::path::Path, extra: &str) {
        let d = self.dir.path();
        let port = self.url.rsplit(':').next().unwrap();
        let conf = format!(
            "[settings]\nsite = {}\nbroker_url = {}\nthreads = 4\nheartbeat_interval = 1\n{extra}\n\n[Endpoint archive]\n{}root = {}\n\n[hub]\ndatabase = {}\nkey_dir = {}\nlisten = 127.0.0.1:{port}\nqueue_prefix = {}.hub\n{}\n",
            site,
            super::agent::BROKER,
            self.archive_settings(),
            root.display(),
            self.db.url,
            d.join("keys").display(),
            self.site,
            self.hub_settings,
        );
        std::fs::write(d.join(name), conf).unwrap();
    }

    /// The endpoint `archive`'s settings but its `root`: [`HubSite::archive`]
    /// or the directory `archive/`.
    pub fn archive_settings(&self) -> String {
        self.archive.clone().unwrap_or_else(|| {
            format!(
                "type = directory\npath = {}\n",
                self.dir.path().join("archive").display()
            )
        })
    }

    /// The shared data directory (the endpoint's root).
    pub fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&self, args: &[&str], conf: &str, log: &str, setpriv: bool) -> std::process::Child {
        self.spawn_in(args, conf, log, setpriv, None)
    }

    fn spawn_in(
        &self,
        args: &[&str],
        conf: &str,
        log: &str,
        setpriv: bool,
        bind: Option<&std::path::Path>,
    ) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(log))
            .unwrap();
        let mut cmd = if let Some(src) = bind {
            // A private mount namespace: the bind mount is this process's
            // alone, and goes away with it.
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
                .arg("sh")
                .arg(src)
                .arg(self.data());
            if setpriv {
                c.args([
                    "setpriv",
                    "--bounding-set=-dac_override,-dac_read_search",
                    "--inh-caps=-dac_override,-dac_read_search",
                ]);
            }
            c.arg(env!("CARGO_BIN_EXE_ferry"));
            c
        } else if setpriv {
            let mut c = Command::new("setpriv");
            c.args([
                "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search",
            ]);
            c.arg(env!("CARGO_BIN_EXE_ferry"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
        };
        cmd.args(args)
            .arg("--config")
            .arg(self.dir.path().join(conf))
            // FERRY_TEST_LOG=info,ferry::agent::tasks=debug logs each
            // file's outcome, for a test that keeps its logs on failure.
            .env(
                "RUST_LOG",
                std::env::var("FERRY_TEST_LOG").unwrap_or("info,lapin=warn".into()),
            )
            .env_remove("JOURNAL_STREAM")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts the hub and waits until it answers.
    pub fn start_hub(&mut self) {
        self.hub = Some(self.spawn(&["hub", "serve"], "hub.conf", "hub.log", false));
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(o) = Command::new("curl")
                .args(["-skf", &format!("{}/api/health/", self.url)])
                .output()
                && o.status.success()
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the hub did not start:\n{}",
                self.log("hub.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The hub's `/api/health/` (which needs no credentials).
    pub fn health(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-skf", &format!("{}/api/health/", self.url)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// This site's entry in the health answer.
    pub fn site_health(&self) -> serde_json::Value {
        let h = self.health();
        h["site_status"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["site"] == self.site.as_str()).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until the hub counts `n` of this site's nodes online.
    pub fn wait_online(&self, n: usize, limit: Duration) {
        let t0 = std::time::Instant::now();
        loop {
            let site = self.site_health();
            let online = site["nodes"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|x| x["online"] == true).count());
            if online == n {
                return;
            }
            assert!(
                t0.elapsed() < limit,
                "{n} nodes not online after {limit:?}: {site}\n{}",
                self.log("hub.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client key for [`HubSite::api`] (made once, with a JWT).
    pub fn key(&self) -> String {
        let path = self.dir.path().join("api-key");
        if let Ok(k) = std::fs::read_to_string(&path) {
            return k;
        }
        let login = serde_json::json!({"username": USER, "password": PASSWORD});
        let t = self.call("POST", "/api/auth/token/", Some(&login), None);
        let auth = format!("Bearer {}", t.1["access"].as_str().expect("a token"));
        let k = self.call(
            "POST",
            "/api/auth/clientkeys/",
            Some(&serde_json::json!({"name": "tests"})),
            Some(&auth),
        );
        let key = k.1["api_key"].as_str().expect("a key").to_string();
        std::fs::write(&path, &key).unwrap();
        key
    }

    /// An authenticated GET's body as text (for answers that hold
    /// `\udcXX` escapes, which serde_json does not read).
    pub fn raw(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sk", "-H", &format!("Authorization: Api-Key {}", self.key())])
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A request with curl: the status and the JSON answer (null if none).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        auth: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut c = Command::new("curl");
        c.args([
            "-sk",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            &format!("{}{path}", self.url),
        ]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: {a}")]);
        }
        if body.is_some() {
            c.args(["-H", "content-type: application/json", "--data-binary", "@-"]);
        }
        let out = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(b) = body {
                    child.stdin.take().unwrap().write_all(b.to_string().as_bytes())?;
                } else {
                    drop(child.stdin.take());
                }
                child.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// An authenticated request; panics unless the status is `want`.
    pub fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>, want: u16) -> serde_json::Value {
        let auth = format!("Api-Key {}", self.key());
        let (code, v) = self.call(method, path, body.as_ref(), Some(&auth));
        assert_eq!(code, want, "{method} {path}: {v}\nhub log:\n{}", self.log("hub.log"));
        v
    }

    /// This site's id at the hub (other sites may be there: the hub hears
    /// every agent on the broker).
    pub fn site_id(&self) -> i64 {
        let all = self.api("GET", "/api/sites/?page_size=0", None, 200);
        all["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == self.site.as_str())
            .and_then(|x| x["id"].as_i64())
            .unwrap_or_else(|| panic!("no site {} at the hub: {all}", self.site))
    }

    /// Sets this site's batch size, without dynamic sizing.
    pub fn batch_size(&self, n: u64) {
        self.batch_sizing(n, false);
    }

    /// Gives the site back its default batch sizing: dynamic, from the
    /// seed's `file_batch_size`.
    pub fn dynamic_batches(&self) {
        self.batch_sizing(ferry::config::defaults::FILE_BATCH_SIZE as u64, true);
    }

    /// Sets this site's `file_batch_size` and `enable_auto_file_batch_sizing`.
    fn batch_sizing(&self, n: u64, dynamic: bool) {
        self.api(
            "PATCH",
            &format!("/api/sites/{}/", self.site_id()),
            Some(serde_json::json!({"file_batch_size": n, "enable_auto_file_batch_sizing": dynamic})),
            200,
        );
    }

    /// Creates a workflow running `action` (a task name, with `kwargs`) on
    /// every file a recursive discovery finds; returns its name.
    pub fn workflow(&self, action: &str, kwargs: serde_json::Value) -> String {
        let name = format!("w{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut a = kwargs;
        a["name"] = action.into();
        self.api(
            "POST",
            "/api/workflows/",
            Some(
                serde_json::json!({"name": name, "label": name, "discovery": "recursive",
                "filter_rules": [{"state": "all", "type": "file", "action": [a]}]}),
            ),
            201,
        );
        name
    }

    /// The id of the workflow named `name`.
    pub fn workflow_id(&self, name: &str) -> serde_json::Value {
        self.api("GET", "/api/workflows/?page_size=0", None, 200)["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap()["id"]
            .clone()
    }

    /// Creates the site `name` through the API (before any agent of it
    /// heart-beats, or a second site).
    pub fn create_site(&self, name: &str) {
        self.api(
            "POST",
            "/api/sites/",
            Some(serde_json::json!({"name": name, "shortcode": "x"})),
            201,
        );
    }

    /// Submits `workflow` on `path`; the job.
    pub fn submit(&self, workflow: &str, path: &std::path::Path) -> serde_json::Value {
        self.api(
            "POST",
            "/api/file/workflow/",
            Some(serde_json::json!({"workflow": workflow, "site": self.site, "paths": [path.to_str().unwrap()]})),
            201,
        )
    }

    /// Job `id` now; null while the hub does not answer.
    pub fn job(&self, id: i64) -> serde_json::Value {
        let auth = format!("Api-Key {}", self.key());
        let (code, v) = self.call("GET", &format!("/api/jobs/{id}/"), None, Some(&auth));
        if code == 200 { v } else { serde_json::Value::Null }
    }

    /// Waits until job `id` is final (panics after `limit`); the job.
    pub fn wait_job(&self, id: i64, limit: Duration) -> serde_json::Value {
        let t0 = std::time::Instant::now();
        loop {
            let j = self.job(id);
            if ["SUCCESS", "FAILURE", "CANCELLED"].contains(&j["state"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(
                t0.elapsed() < limit,
                "job {id} not final after {limit:?}: {j}\nhub log:\n{}",
                self.log("hub.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// On a failed test, keeps the logs (not the data) in
    /// `/tmp/ferry-hub-test-<site>/` to read afterwards.
    pub fn keep_logs(&self) {
        let to = std::path::PathBuf::from(format!("/tmp/ferry-hub-test-{}", self.site));
        let _ = std::fs::create_dir_all(&to);
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
        }
    }

    /// Kills the hub with SIGKILL.
    pub fn kill_hub(&mut self) {
        if let Some(mut c) = self.hub.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// [`HubSite::new`] with the hub and every agent started, and the
    /// agents online.
    pub fn running(db: TestDb, agents: usize, hub_settings: &str) -> HubSite {
        let mut s = HubSite::new(db, agents, hub_settings);
        s.start_hub();
        for i in 0..agents {
            s.start_agent(i);
        }
        s.wait_online(agents, Duration::from_secs(20));
        s
    }

    /// Starts agent `i` and waits until it consumes.
    pub fn start_agent(&mut self, i: usize) {
        let log = format!("agent{i}.log");
        let before = self.log(&log).matches("connected; consuming").count();
        let bind = self.binds[i].clone();
        let setpriv = !self.full_root[i];
        self.agents[i] = Some(self.spawn_in(&["agent"], &format!("agent{i}.conf"), &log, setpriv, bind.as_deref()));
        let t0 = std::time::Instant::now();
        while self.log(&log).matches("connected; consuming").count() <= before {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "agent {i} did not start:\n{}",
                self.log(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops agent `i` with SIGTERM (or SIGKILL when `kill`).
    pub fn stop_agent(&mut self, i: usize, kill: bool) {
        if let Some(mut c) = self.agents[i].take() {
            let sig = if kill { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// Sends agent `i` a signal by name (`STOP`, `CONT`, …) and leaves it
    /// running: a stopped agent holds its deliveries unacknowledged until it
    /// is continued or killed.
    pub fn signal_agent(&self, i: usize, sig: &str) {
        let c = self.agents[i].as_ref().expect("the agent runs");
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} agent {i}");
    }

    /// A log file's text.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Runs a Python script of `tests/hub/` with the hub's URL, the user,
    /// the site and `args`; its stdout as JSON.
    pub fn python(&self, script: &str, args: &[&str]) -> serde_json::Value {
        let out = Command::new("python3")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/hub")
                    .join(script),
            )
            .args([&self.url, USER, PASSWORD, &self.site])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} failed: {}\nhub log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log("hub.log")
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{script}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for HubSite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_logs();
        }
        self.kill_hub();
        for i in 0..self.agents.len() {
            self.stop_agent(i, true);
        }
        let site = self.site.clone();
        let _ = super::agent::rt().block_on(async move {
            use lapin::options::QueueDeleteOptions;
            let conn = lapin::Connection::connect(super::agent::BROKER, lapin::ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            for f in ["worker", "discovery", "custom", "interactive"] {
                let _ = ch
                    .queue_delete(format!("{site}.default#{f}").into(), QueueDeleteOptions::default())
                    .await;
            }
            for q in ["results", "events", "rejected"] {
                let _ = ch
                    .queue_delete(format!("{site}.hub.{q}").into(), QueueDeleteOptions::default())
                    .await;
            }
            conn.close(200, "bye".into()).await
        });
    }
}
