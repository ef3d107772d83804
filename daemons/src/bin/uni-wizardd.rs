//! `uni-wizardd`: the node's daemons (router, health, worker, sovereign). See
//! `uni_wizard_daemons::daemon`.

use clap::Parser;

fn main() {
    let args = uni_wizard_daemons::daemon::DaemonArgs::parse();
    std::process::exit(uni_wizard_daemons::daemon::main(args));
}
