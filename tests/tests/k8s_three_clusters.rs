//! The seeds' lab on real control planes, end to end: three clusters, each with Shoal
//! installed from `deploy/overlays/c<i>` (its StatefulSet's two Pods run by stand-ins)
//! and CoreDNS answering `clusterset.local`; `rebel-base` in c0 and c1,
//! `payments/fraud-detection` in c2, imported everywhere, and CoreDNS's answers checked
//! after every step. Then c1 dies
//! (both replicas and its API server) and comes back, c0 is partitioned away while it
//! holds `payments-write-leader` and the majority takes the lease over, and c0's
//! replicas are restarted one at a time without any peer withdrawing c0. The timeline
//! and the figures are printed; the targets beside them are never asserted.
// Real processes on the wall clock; a failed step panics with what it saw.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use shoal_tests::lab::{Install, Lab};

#[test]
fn three_clusters_import_withdraw_a_dead_cluster_fence_a_partition_and_roll() {
    let mut lab = Lab::start(Install::shipped()).expect("the lab starts");
    let outcome = (|| -> Result<(), String> {
        lab.wait_converged(None, "every cluster imports rebel-base and fraud-detection")?;

        // Within the step's deadline; the figure is printed against its target.
        lab.kill_cluster(1)?;
        lab.restart_cluster(1)?;

        lab.partition(0, 2)?;
        lab.heal(0)?;

        let withdrawals = lab.roll(0)?;
        assert_eq!(
            withdrawals,
            0,
            "a rolling restart is never a withdrawal:\n{}",
            lab.report()
        );
        Ok(())
    })();
    eprintln!("{}", lab.report());
    if let Err(e) = outcome {
        panic!("{e}\n{}", lab.mesh.log_tails(40));
    }
}
