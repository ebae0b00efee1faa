//! `opticache-dev-certs`: writes a development CA and a certificate for the
//! local cluster (`make certs`). Exit codes: 0 written, 1 failed, 2 bad flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opticache_security::dev_certs::{DevCerts, LOCAL_HOSTS};

/// Writes ca.pem, ca.key, cluster.pem and cluster.key for a development cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory to write into (created if missing; existing files are replaced).
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Host names and IP addresses the cluster certificate covers (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = LOCAL_HOSTS.map(String::from))]
    hosts: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = DevCerts::generate("OptiCache development CA", &args.hosts).and_then(|c| c.write(&args.out));
    match result {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            println!("the certificate covers: {}", args.hosts.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opticache-dev-certs: {e}");
            ExitCode::FAILURE
        }
    }
}
