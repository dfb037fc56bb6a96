//! Running kubectl and reading what it prints.

use std::process::Command;

use super::KubectlError;

/// Runs `command` (a kubectl invocation) to completion and returns its stdout, or the
/// exit status and stderr as [`KubectlError::Failed`].
pub fn run(command: &mut Command) -> Result<String, KubectlError> {
    let args = describe(command);
    let output = command.output().map_err(|source| KubectlError::Spawn {
        args: args.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(KubectlError::Failed {
            args,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// [`run`], parsing stdout as JSON (pass `-o json` or `get --raw`).
pub fn run_json(command: &mut Command) -> Result<serde_json::Value, KubectlError> {
    let stdout = run(command)?;
    serde_json::from_str(&stdout).map_err(|e| KubectlError::Json {
        args: describe(command),
        reason: e.to_string(),
    })
}

/// The arguments of `command` for error messages, without `--kubeconfig` (long and
/// the same every time) and without any `--token` (a secret).
fn describe(command: &Command) -> String {
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut shown = Vec::new();
    let mut skip_value = false;
    for arg in &args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if arg == "--kubeconfig" || arg == "--token" {
            skip_value = true;
            continue;
        }
        if arg.starts_with("--kubeconfig=") || arg.starts_with("--token=") {
            continue;
        }
        shown.push(arg.as_str());
    }
    shown.join(" ")
}
