//! The two runtimes the end-to-end suites run on: the project's in-process host
//! (`health_host::App`) and real Spin (`spin up` in a child process, reached over HTTP on
//! loopback). `HEALTH_E2E_RUNTIME=spin` selects real Spin; `cargo xtask test` runs every suite
//! once on each. Tests see one type, [`Target`], whichever runs.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use health_host::{App, LoadOptions};
use http_body_util::{BodyExt, Full};

/// The environment variable that selects the runtime: `host` (the default) or `spin`.
pub const RUNTIME_ENV: &str = "HEALTH_E2E_RUNTIME";
/// The real Spin binary to run (else `target/tools/spin`, else `spin` on `PATH`).
pub const SPIN_BIN_ENV: &str = "SPIN_BIN";
/// Set (CI sets it) to make a test that cannot run here (no Spin, no `redis-server`) fail
/// instead of saying so and passing.
pub const REQUIRE_ALL_ENV: &str = "HEALTH_E2E_REQUIRE_ALL";
/// How long `spin up` may take to compile the components and start listening.
const SPIN_START_TIMEOUT: Duration = Duration::from_secs(180);
/// Lines of Spin's own output (and the guests' stdout/stderr) kept for failure messages.
const OUTPUT_LINES: usize = 2000;

/// Which runtime this test process runs the application on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The project's own wasmtime host, in process.
    Host,
    /// Real Spin (`spin up`), in a child process.
    Spin,
}

impl Runtime {
    /// `spin` or `host`, as [`RUNTIME_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Spin => "spin",
        }
    }

    /// The runtime [`RUNTIME_ENV`] selects; an unknown value is a test setup error.
    pub fn selected() -> Self {
        match std::env::var(RUNTIME_ENV).as_deref() {
            Err(_) | Ok("" | "host") => Self::Host,
            Ok("spin") => Self::Spin,
            Ok(other) => panic!("{RUNTIME_ENV}={other:?}: expected `host` or `spin`"),
        }
    }
}

/// The real Spin binary: [`SPIN_BIN_ENV`], else `target/tools/spin` (where `cargo xtask test`
/// unpacks the one beside the project), else `spin` on `PATH`.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(SPIN_BIN_ENV).filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let tools = crate::root().join("target/tools/spin");
    if tools.is_file() {
        return Some(tools);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("spin"))
        .find(|bin| bin.is_file())
}

/// A running application: the in-process host or a `spin up` process. Cheap to clone.
#[derive(Clone)]
pub enum Target {
    Host(App),
    Spin(Arc<SpinProcess>),
}

impl Target {
    /// Loads the application on the [`Runtime::selected`] runtime.
    pub fn load(options: &LoadOptions) -> anyhow::Result<Self> {
        Self::load_on(Runtime::selected(), options)
    }

    /// Loads the application on `runtime`, whatever `HEALTH_E2E_RUNTIME` says (the benchmark
    /// runs both in one process).
    pub fn load_on(runtime: Runtime, options: &LoadOptions) -> anyhow::Result<Self> {
        crate::fresh::ensure_manifest_fresh(&options.manifest)?;
        match runtime {
            Runtime::Host => Ok(Self::Host(App::load(options)?)),
            Runtime::Spin => Ok(Self::Spin(Arc::new(SpinProcess::start(options)?))),
        }
    }

    /// Sends one request from the default client address.
    pub async fn handle(&self, req: http::Request<Bytes>) -> anyhow::Result<http::Response<Bytes>> {
        self.handle_from(req, health_host::DEFAULT_CLIENT).await
    }

    /// Sends one request as if from client address `from`. On the host `from` is what the
    /// guests see as `spin-client-addr`; on Spin the request leaves from a loopback address
    /// derived from it (see [`loopback_for`]), so different `from`s are different clients.
    pub async fn handle_from(
        &self,
        req: http::Request<Bytes>,
        from: SocketAddr,
    ) -> anyhow::Result<http::Response<Bytes>> {
        match self {
            Self::Host(app) => app.handle_from(req, from).await,
            Self::Spin(spin) => spin.send(req, loopback_for(from.ip())).await,
        }
    }

    /// Recent guest output (and, on Spin, Spin's own), for failure messages and log checks.
    pub fn guest_output(&self) -> Vec<String> {
        match self {
            Self::Host(app) => app.guest_output(),
            Self::Spin(spin) => spin.output(),
        }
    }

    /// A base URL serving the application over real HTTP (`http://127.0.0.1:PORT`): Spin's own
    /// listener, or the host served on a new loopback listener (needs a Tokio runtime).
    pub async fn url(&self) -> anyhow::Result<String> {
        match self {
            Self::Host(app) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                tokio::spawn(health_host::serve(app.clone(), listener));
                Ok(url)
            }
            Self::Spin(spin) => Ok(format!("http://{}", spin.addr)),
        }
    }

    /// Which runtime this is.
    pub fn runtime(&self) -> Runtime {
        match self {
            Self::Host(_) => Runtime::Host,
            Self::Spin(_) => Runtime::Spin,
        }
    }
}

/// The loopback address a request "from" `ip` leaves from on real Spin, which reports the TCP
/// peer as `spin-client-addr`: loopback addresses as they are, any other IPv4 `a.b.c.d` as
/// `127.(a^b).c.d` (Linux routes all of 127/8 to the loopback interface), IPv6 as 127.0.0.1.
pub fn loopback_for(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => v4,
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let second = if a ^ b == 0 { 1 } else { a ^ b };
            Ipv4Addr::new(127, second, c, d)
        }
        IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    }
}

/// `spin up` running one application in a child process. Dropping it stops Spin; so does the
/// test process ending, even when the value lives in a `static` and is never dropped.
pub struct SpinProcess {
    addr: SocketAddr,
    /// Spin under its [`watched`] shell; `None` once stopped.
    child: Mutex<Option<Child>>,
    output: Arc<Mutex<Vec<String>>>,
    log_dir: PathBuf,
}

impl SpinProcess {
    /// Starts `spin up` for `options` (manifest, runtime config, state directory, variables)
    /// on a free loopback port and waits until it accepts connections.
    pub fn start(options: &LoadOptions) -> anyhow::Result<Self> {
        let bin = spin_binary().context(
            "HEALTH_E2E_RUNTIME=spin but no Spin binary: set SPIN_BIN, put `spin` on PATH, or run `cargo xtask test`",
        )?;
        let mut last_error = None;
        // A port picked free can be taken before Spin binds it; try another then.
        for _ in 0..3 {
            match Self::start_on(&bin, options, free_port()?) {
                Ok(spin) => return Ok(spin),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("spin up did not start")))
    }

    fn start_on(bin: &Path, options: &LoadOptions, port: u16) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_dir = options.state_dir.join("logs");
        std::fs::create_dir_all(&options.state_dir)?;
        let mut cmd = watched(bin, &["up"]);
        cmd.arg("--from").arg(&options.manifest);
        if let Some(runtime_config) = &options.runtime_config {
            cmd.arg("--runtime-config-file").arg(runtime_config);
        }
        cmd.arg("--state-dir").arg(&options.state_dir).arg("--log-dir").arg(&log_dir);
        cmd.arg("--listen").arg(addr.to_string());
        // Only what the test gives: no SPIN_VARIABLE_* leaking in from the developer's shell.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPIN_VARIABLE_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(&options.env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    push_line(&output, line);
                }
            });
        }
        let spin = Self { addr, child: Mutex::new(Some(child)), output, log_dir };
        let deadline = Instant::now() + SPIN_START_TIMEOUT;
        // Ready when this Spin says it serves `addr` (it prints its routes after binding) and
        // the port accepts. A port that merely accepts may belong to another test's Spin that
        // picked the same free port: this one then fails to bind and exits, and is retried.
        // `http://{addr}` not followed by a digit: port 3929 is not 39297. The URL may end the
        // line (`Serving http://{addr}`, a wildcard route at `/...`) or go on with a path.
        let serving = format!("http://{addr}");
        let names_addr = |line: &str| {
            line.match_indices(&serving)
                .any(|(at, _)| !line[at + serving.len()..].starts_with(|c: char| c.is_ascii_digit()))
        };
        loop {
            let announced = spin.output.lock().map(|lines| lines.iter().any(|l| names_addr(l))).unwrap_or(false);
            if announced && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(spin);
            }
            let exited = match spin.child.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.as_mut() {
                Some(child) => child.try_wait()?,
                None => bail!("stopped"),
            };
            if let Some(status) = exited {
                bail!("spin up exited ({status}) before listening on {addr}:\n{}", spin.output().join("\n"));
            }
            if Instant::now() > deadline {
                bail!("spin up did not listen on {addr} within {SPIN_START_TIMEOUT:?}:\n{}", spin.output().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address Spin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Spin's output and the guests' logs (`--log-dir`), most recent last.
    pub fn output(&self) -> Vec<String> {
        let mut lines = self.output.lock().map(|l| l.clone()).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for file in files {
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                lines.extend(text.lines().map(|line| format!("[{name}] {line}")));
            }
        }
        lines
    }

    /// Sends `req` over a new connection from `source` (port chosen by the kernel).
    pub async fn send(&self, req: http::Request<Bytes>, source: Ipv4Addr) -> anyhow::Result<http::Response<Bytes>> {
        let sent = self.send_once(req, source).await;
        sent.map_err(|e| match self.exit_status() {
            Some(status) => e.context(format!("spin up has exited ({status})")),
            None => e.context(format!("spin up on {} is still running", self.addr)),
        })
    }

    /// How Spin ended, if it has.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().ok()?.as_mut()?.try_wait().ok()?
    }

    async fn send_once(&self, req: http::Request<Bytes>, source: Ipv4Addr) -> anyhow::Result<http::Response<Bytes>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("binding {source}"))?;
        let stream = socket.connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(http::header::HOST) {
            parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(&self.addr.to_string())?);
        }
        let response = sender.send_request(http::Request::from_parts(parts, Full::new(body))).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    /// Stops Spin now (what dropping does).
    pub fn stop(&self) {
        if let Some(child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            stop_watched(child);
        }
    }
}

impl Drop for SpinProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn push_line(output: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut output) = output.lock() {
        if output.len() >= OUTPUT_LINES {
            output.drain(..OUTPUT_LINES / 2);
        }
        output.push(line);
    }
}

/// `bin args...` under a watchdog shell that kills it and its children (`SIGKILL`) when the shell's stdin, a
/// pipe this process holds, reaches end of file: on [`stop_watched`], or when the test process
/// ends, even with the handle in a `static` that is never dropped.
fn watched(bin: &Path, args: &[&str]) -> Command {
    // The children go first: `spin up` runs the application in a child process (`spin
    // trigger http`) that would otherwise outlive it, reparented to init.
    // The shell ends when the process does, with its status, so a Spin that fails to start
    // (a port taken meanwhile) is seen to have exited. The watcher reads stdin through fd 3:
    // a background list's own stdin is /dev/null.
    let script = r#"exec 3<&0
"$0" "$@" 3<&- </dev/null & child=$!
( cat <&3 >/dev/null; pkill -KILL -P "$child" 2>/dev/null; kill -KILL "$child" 2>/dev/null ) & watcher=$!
exec 3<&-
wait "$child"; status=$?
kill -KILL $(pgrep -P "$watcher") "$watcher" 2>/dev/null
exit "$status""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(bin).args(args).stdin(Stdio::piped());
    cmd
}

/// Stops a [`watched`] process and waits for it.
fn stop_watched(mut child: Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback port free at the time of asking.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A throwaway `redis-server` (Debian's package) on a free loopback port, without persistence;
/// stopped on drop or when the test process ends. For the tests of Spin's Redis key-value backend.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Where a durable server keeps its append-only file; `None`: nothing is kept.
    dir: Option<PathBuf>,
}

impl RedisServer {
    /// `redis-server` on `PATH`, if any.
    pub fn binary() -> Option<PathBuf> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join("redis-server"))
            .find(|bin| bin.is_file())
    }

    /// Starts one and waits until it answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_in(None)
    }

    /// Starts one that appends every write to a file in `dir` before answering, so a
    /// [`Self::restart`] after a crash ([`Self::stop`]) has every key back.
    pub fn start_durable(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Self::start_in(Some(dir.to_owned()))
    }

    fn start_in(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let bin = Self::binary().context("redis-server is not on PATH (Debian: apt-get install redis-server)")?;
        let mut server = Self { port: free_port()?, child: None, dir };
        server.spawn(&bin)?;
        Ok(server)
    }

    fn spawn(&mut self, bin: &Path) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--port", &port, "--save", ""];
        let dir = self.dir.as_ref().map(|d| d.display().to_string());
        match &dir {
            Some(dir) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", dir]),
            None => args.extend(["--appendonly", "no"]),
        }
        let mut cmd = watched(bin, &args);
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not answer PING on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub fn ping(&self) -> bool {
        use std::io::Write;
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT/{db}`.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Kills the server at once, as a crash would; [`Self::restart`] brings it back on the same
    /// port (empty, unless started with [`Self::start_durable`]).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_watched(child);
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let bin = Self::binary().context("redis-server is not on PATH")?;
        self.spawn(&bin)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
