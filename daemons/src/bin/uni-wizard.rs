//! The `uni-wizard` operator CLI; see `uni_wizard_daemons::cli` for commands and exit codes.

use clap::Parser;
use uni_wizard_daemons::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    std::process::exit(code);
}
