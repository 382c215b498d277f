//! `flink-webhook`: serve, mutate (preview), certs, check-config.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use flink_webhook::metrics::Metrics;
use flink_webhook::patch::MutationContext;
use flink_webhook::policy::{NativeSidecar, Policy};
use flink_webhook::state::AppState;
use flink_webhook::{certs, cluster, detect, preview, reload, server, tls};

/// See the comment on the dependency in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "flink-webhook",
    version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("FLINK_INJECTOR_REVISION"), ")"),
    about = "Mutating admission webhook for stock Apache Flink pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /mutate over TLS, and /metrics over plain HTTP.
    Serve(ServeArgs),
    /// Print what the webhook would do to a pod (a Pod or an AdmissionReview, YAML or JSON).
    Mutate(MutateArgs),
    /// Write a CA and a serving certificate for NAME.NS.svc, and print the CA bundle.
    Certs(CertsArgs),
    /// List the Flink pods in opted-in namespaces that run without the injection the policy would
    /// give them; exit 1 if any, 0 if none, 2 when the cluster cannot be read.
    Audit(AuditArgs),
    /// Validate a policy file.
    CheckConfig {
        /// The policy file.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, env = "FLINK_WEBHOOK_CONFIG")]
    config: PathBuf,
    #[arg(long, env = "FLINK_WEBHOOK_TLS_CERT")]
    tls_cert: PathBuf,
    #[arg(long, env = "FLINK_WEBHOOK_TLS_KEY")]
    tls_key: PathBuf,
    #[arg(long, env = "FLINK_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "FLINK_WEBHOOK_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    metrics_listen: SocketAddr,
    /// Skip asking the API server its version (for `nativeSidecar: auto`) and use this one.
    #[arg(long, env = "FLINK_WEBHOOK_KUBERNETES_VERSION")]
    kubernetes_version: Option<String>,
    /// How often the policy and certificate files are re-read even without a file event.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    poll_seconds: u64,
    #[command(flatten)]
    detector: DetectorArgs,
}

#[derive(clap::Args)]
struct DetectorArgs {
    /// Watch Flink pods for ones admitted without injection (needs the RBAC in manifests/base).
    #[arg(long, env = "FLINK_WEBHOOK_DETECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    detector: bool,
    /// The namespaces the webhook serves: the MutatingWebhookConfiguration's namespaceSelector.
    #[arg(
        long,
        env = "FLINK_WEBHOOK_NAMESPACE_SELECTOR",
        default_value = "flink-injector.io/enabled=true"
    )]
    namespace_selector: String,
    /// The webhook's own namespace: where the detector Lease (and, for audit, the policy) lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "flink-system")]
    webhook_namespace: String,
    /// This replica's name in the Lease and in the Events' reportingInstance.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[derive(clap::Args)]
struct AuditArgs {
    /// A kubeconfig file; without it KUBECONFIG, ~/.kube/config or the in-cluster account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Only this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// The policy file to judge by; without it the one in the webhook's ConfigMap.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(
        long,
        env = "FLINK_WEBHOOK_NAMESPACE_SELECTOR",
        default_value = "flink-injector.io/enabled=true"
    )]
    namespace_selector: String,
    /// Where the webhook runs (its policy ConfigMap and Lease).
    #[arg(long, default_value = "flink-system")]
    webhook_namespace: String,
}

#[derive(clap::Args)]
struct MutateArgs {
    #[arg(long)]
    config: PathBuf,
    /// Input file, or `-` for stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    file: String,
    #[arg(long, value_enum, default_value_t = Output::Pod)]
    output: Output,
    /// Namespace for a Pod that names none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The cluster's version, for `nativeSidecar: auto` (without it, auto means a plain container).
    #[arg(long)]
    kubernetes_version: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Pod,
    Patch,
}

#[derive(clap::Args)]
struct CertsArgs {
    #[arg(long)]
    service: String,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    out_dir: PathBuf,
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Extra DNS names for the serving certificate (repeatable), e.g. `localhost` for a local run.
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,
}

fn init_logging() {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube's watcher warns on every retry; the detector logs a failing watch once (and again
    // when the error changes), unless RUST_LOG asks for kube_runtime itself.
    if !asked.contains("kube_runtime") {
        if let Ok(quiet) = "kube_runtime::watcher=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(serve(args))),
        Command::Audit(args) => return audit_command(args),
        Command::Mutate(args) => mutate(args),
        Command::Certs(args) => make_certs(args),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flink-webhook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_policy(path: &std::path::Path) -> Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading policy {}", path.display()))?;
    Policy::from_yaml(&text).with_context(|| format!("policy {}", path.display()))
}

fn check_config(file: &std::path::Path) -> Result<()> {
    let policy = load_policy(file)?;
    println!("{}: valid", file.display());
    let native = match policy.native_sidecar() {
        NativeSidecar::Auto => "auto (decided from the API server's version)",
        NativeSidecar::Enabled => "true",
        NativeSidecar::Disabled => "false",
    };
    println!("nativeSidecar: {native}");
    Ok(())
}

fn mutate(args: MutateArgs) -> Result<()> {
    let policy = load_policy(&args.config)?;
    let text = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let cluster_native = match &args.kubernetes_version {
        Some(v) => cluster::version_supports_native_sidecars(v)?,
        None => false,
    };
    let ctx = MutationContext {
        native_sidecar: cluster_native,
    };
    let input = preview::read_input(&text, &args.namespace)?;
    let patch = preview::patch_for(&input, &policy, &ctx)?;
    let text = match args.output {
        Output::Patch => serde_json::to_string_pretty(&patch)? + "\n",
        Output::Pod => preview::to_yaml(&preview::apply(&input.pod, &patch)?)?,
    };
    write_stdout(&text)
}

/// Writes to stdout without panicking when the reader went away (`mutate ... | head`).
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

fn make_certs(args: CertsArgs) -> Result<()> {
    let issued = certs::issue(
        &args.service,
        &args.namespace,
        &args.out_dir,
        args.days,
        &args.dns_names,
    )?;
    eprintln!(
        "wrote {}, {}, {} for {}",
        issued.ca_cert.display(),
        issued.tls_cert.display(),
        issued.tls_key.display(),
        issued.dns_names.join(", ")
    );
    // stdout holds only the bundle, so scripts can capture it for caBundle.
    println!("{}", issued.ca_bundle_base64);
    Ok(())
}

/// `audit`'s exit code: 1 for missed pods is its answer, so a failure to read the cluster is 2.
fn audit_command(args: AuditArgs) -> ExitCode {
    let run = async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        let policy = match &args.config {
            Some(file) => load_policy(file)?,
            None => detect::audit::policy_from_configmap(&client, &args.webhook_namespace).await?,
        };
        let opts = detect::audit::AuditOptions {
            namespace: args.namespace.clone(),
            namespace_selector: args.namespace_selector.clone(),
            webhook_namespace: args.webhook_namespace.clone(),
        };
        Ok::<_, anyhow::Error>(detect::audit::audit(&client, &policy, &opts).await?)
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run));
    match result {
        Ok(report) => {
            if report.rows.is_empty() {
                match &args.namespace {
                    Some(ns) => eprintln!(
                        "no Flink pods in namespace {ns}, or it is not opted in ({})",
                        args.namespace_selector
                    ),
                    None => eprintln!("no Flink pods in opted-in namespaces"),
                }
            } else if let Err(e) = write_stdout(&detect::audit::render(&report)) {
                eprintln!("flink-webhook audit: {e:#}");
                return ExitCode::from(2);
            }
            if report.install_time.is_none() {
                eprintln!(
                    "note: the detector Lease {}/{} was not found or not readable, so pods created before the install are listed as NOT-INJECTED too",
                    args.webhook_namespace,
                    detect::lease::NAME
                );
            }
            let missed = report.missed();
            if missed > 0 {
                eprintln!("{missed} pod(s) run without their injection: delete them so that Flink recreates them through the webhook");
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("flink-webhook audit: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster)",
        )?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Starts the missed-injection detector unless switched off; without a Kubernetes client
/// configuration (a local run) it says so and the webhook serves without it.
async fn start_detector(args: &DetectorArgs, state: Arc<AppState>) {
    if !args.detector {
        tracing::info!("missed-injection detector off (--detector=false)");
        return;
    }
    let client = match kube_client(None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"),
                "missed-injection detector off: no Kubernetes API to watch");
            return;
        }
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "flink-webhook".to_string())
    });
    let config = detect::watch::DetectorConfig {
        namespace_selector: args.namespace_selector.clone(),
        lease_namespace: args.webhook_namespace.clone(),
        identity,
    };
    tokio::spawn(detect::watch::run(client, state, config));
}

/// Always asked (not only when the cluster-wide policy says `auto`): a namespace override may.
async fn detect_native_sidecars(args: &ServeArgs) -> Result<bool> {
    if let Some(v) = &args.kubernetes_version {
        return Ok(cluster::version_supports_native_sidecars(v)?);
    }
    match cluster::api_server_version(Duration::from_secs(5)).await {
        Ok(v) => {
            let native = cluster::version_supports_native_sidecars(&v).unwrap_or(false);
            tracing::info!(kubernetes_version = %v, native_sidecar = native, "read API server version");
            Ok(native)
        }
        Err(e) => {
            tracing::warn!(error = %e,
                "cannot read the API server version; nativeSidecar: auto falls back to a plain container");
            Ok(false)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let native = detect_native_sidecars(&args).await?;
    let state = Arc::new(AppState::new(&args.config, native)?);
    let cert = Arc::new(
        tls::ReloadingCert::load(&args.tls_cert, &args.tls_key)
            .context("loading the serving certificate")?,
    );
    let tls_config = Arc::new(tls::server_config(cert.clone())?);
    state
        .metrics
        .certificate_expiry
        .set(cert.not_after().unwrap_or_default());

    let poll = Duration::from_secs(args.poll_seconds.max(1));
    let policy_watch = {
        let state = state.clone();
        let path = state.policy_path().to_path_buf();
        reload::watch("policy", &[&path], poll, move || state.reload_policy())
    };
    let tls_watch = {
        let cert = cert.clone();
        let state = state.clone();
        let [c, k] = cert.paths();
        let (c, k) = (c.to_path_buf(), k.to_path_buf());
        reload::watch("tls", &[&c, &k], poll, move || match cert.reload() {
            Ok(true) => {
                Metrics::reload(&state.metrics.tls_reloads, true);
                state
                    .metrics
                    .certificate_expiry
                    .set(cert.not_after().unwrap_or_default());
                tracing::info!("serving certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                // Mid-rotation the pair can briefly disagree; the next event or poll retries.
                Metrics::reload(&state.metrics.tls_reloads, false);
                tracing::warn!(error = %e, "serving certificate reload failed; keeping the current one");
            }
        })
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    tracing::info!(listen = %args.listen, metrics_listen = %args.metrics_listen,
        native_sidecar = native, "flink-webhook serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = {
        let mut rx = stop_rx.clone();
        tokio::spawn(server::serve_plain(
            metrics_listener,
            server::metrics_router(state.clone()),
            async move {
                let _ = rx.changed().await;
            },
        ))
    };
    start_detector(&args.detector, state.clone()).await;
    state.set_ready(true);
    let shutdown = {
        let state = state.clone();
        async move {
            wait_for_signal().await;
            // Fail readiness first so the Service stops sending new requests while we drain.
            state.set_ready(false);
            tracing::info!("shutting down: draining in-flight requests");
        }
    };
    server::serve_tls(
        listener,
        tls_config,
        server::admission_router(state.clone()),
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = metrics_task.await;
    drop(policy_watch);
    drop(tls_watch);
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
