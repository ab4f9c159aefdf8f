//! `detour import`: another system's failover documents in, detour's documents out.

use crate::import::gloo::{self, Options, output};
use crate::source::files::read_dir;
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use detour_core::docs::Problems;
use detour_core::docs::load::SourceFile;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Gloo Federation: FailoverScheme (fed.solo.io/v1), Upstream (gloo.solo.io/v1; kube
    /// and static) and KubernetesCluster (multicluster.solo.io/v1alpha1) documents in;
    /// MemberCluster and FailoverScheme documents out. Every field not carried is
    /// reported on stderr, per document.
    Gloo(GlooArgs),
}

#[derive(Args, Debug)]
pub struct GlooArgs {
    /// A directory of *.yaml / *.yml files (several documents each, or `kubectl get -o
    /// yaml` Lists), one such file, or `-` for standard input.
    #[arg(long, value_name = "DIR|FILE|-")]
    pub from: PathBuf,
    /// Write one file per document into DIR (created) instead of one stream to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The east-west gateway of a cluster, as the other clusters reach it (port 15443
    /// when left out); one for every cluster the documents name.
    #[arg(long = "gateway", value_name = "CLUSTER=HOST[:PORT]", value_parser = cluster_gateway)]
    pub gateways: Vec<(String, (String, u16))>,
    /// For `detour serve --kubernetes`: MemberClusters list no services (detour
    /// discovers them) and name the kubeconfig Secret Gloo Federation registered.
    /// Without it the documents are for file mode and pass `detour check`.
    #[arg(long)]
    pub kubernetes: bool,
}

fn cluster_gateway(text: &str) -> Result<(String, (String, u16)), String> {
    let (cluster, address) = text
        .split_once('=')
        .filter(|(c, a)| !c.is_empty() && !a.is_empty())
        .ok_or_else(|| format!("{text:?} is not CLUSTER=HOST[:PORT]"))?;
    let gateway = super::gateway(address).map_err(|e| e.to_string())?;
    Ok((cluster.to_string(), gateway))
}

pub fn run(command: ImportCommand) -> anyhow::Result<ExitCode> {
    let ImportCommand::Gloo(args) = command;
    let mut gateways = BTreeMap::new();
    for (cluster, gateway) in args.gateways {
        if gateways.insert(cluster.clone(), gateway).is_some() {
            bail!("--gateway {cluster}=...: given twice");
        }
    }
    let files = read_from(&args.from)?;
    let opts = Options {
        gateways,
        kubernetes: args.kubernetes,
    };
    let imported = match gloo::import(&files, &opts) {
        Ok(imported) => imported,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found: nothing written", problems.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    for note in &imported.report {
        eprintln!("{note}");
    }
    match &args.out {
        Some(dir) => {
            for path in output::write_dir(&imported, dir)? {
                println!("{}", path.display());
            }
        }
        None => print!("{}", output::to_yaml(&imported)?),
    }
    eprintln!(
        "imported {} MemberCluster(s) and {} FailoverScheme(s); {} note(s) above",
        imported.clusters.len(),
        imported.schemes.len(),
        imported.report.len()
    );
    if !args.kubernetes {
        eprintln!(
            "file mode: a kube Upstream's Service is listed at its cluster DNS name (NAME.NAMESPACE.svc.DOMAIN:PORT), so Envoy balances over the Service, not its pods; --kubernetes lets detour discover the pods"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The files of `--from`: a directory's YAML files, one file, or standard input.
fn read_from(from: &Path) -> anyhow::Result<Vec<SourceFile>> {
    if from == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(vec![SourceFile {
            path: PathBuf::from("<stdin>"),
            text,
        }]);
    }
    if from.is_file() {
        let text =
            std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
        return Ok(vec![SourceFile {
            path: from.to_path_buf(),
            text,
        }]);
    }
    read_dir(from).map_err(|problems| anyhow!("{}", Problems(problems)))
}
