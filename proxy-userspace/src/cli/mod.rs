//! Subcommand implementations. Each prints to stdout/stderr and returns the
//! process exit code.
pub mod analyze;
pub mod authz;
pub mod ca;
pub mod compile;
pub mod validate;

use std::io::Write;

/// Prints a line to stdout; a closed pipe (`strait ... | head`) is not an
/// error worth a panic.
pub fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::ExitCode;

    /// A file in a fresh temp directory, removed on drop.
    struct TempYaml(PathBuf);

    impl TempYaml {
        fn new(name: &str, text: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("strait-cli-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("c.yaml"), text).unwrap();
            TempYaml(dir)
        }
    }

    impl Drop for TempYaml {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  clusterIP: 10.96.0.1\n  ports: [{name: http, port: 9080}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";

    #[test]
    fn validate_exit_codes() {
        let good = TempYaml::new("good", GOOD);
        assert_eq!(
            super::validate::run(std::slice::from_ref(&good.0)),
            ExitCode::SUCCESS
        );
        let bad = TempYaml::new(
            "bad",
            &GOOD.replace("{host: reviews}", "{host: reviews, subset: v1.0}"),
        );
        assert_eq!(
            super::validate::run(std::slice::from_ref(&bad.0)),
            ExitCode::from(1)
        );
        let missing = [PathBuf::from("/nonexistent/strait.yaml")];
        assert_eq!(super::validate::run(&missing), ExitCode::from(1));
    }

    #[test]
    fn analyze_exit_codes() {
        let good = TempYaml::new("agood", GOOD);
        assert_eq!(
            super::analyze::run(std::slice::from_ref(&good.0)),
            ExitCode::SUCCESS
        );
        let bad = TempYaml::new("abad", &GOOD.replace("{host: reviews}", "{host: ratings}"));
        assert_eq!(
            super::analyze::run(std::slice::from_ref(&bad.0)),
            ExitCode::from(79)
        );
    }

    #[test]
    fn authz_check_finds_the_pod_or_fails() {
        let yaml = format!(
            "{GOOD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-1, namespace: default, labels: {{app: reviews}}}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: 10.244.0.9}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-all, namespace: default}}\nspec: {{}}\n"
        );
        let dir = TempYaml::new("authz", &yaml);
        let files = std::slice::from_ref(&dir.0);
        assert_eq!(
            super::authz::run("reviews-1.default", files, Some("n1".into())),
            ExitCode::SUCCESS
        );
        assert_eq!(
            super::authz::run("default/nope", files, None),
            ExitCode::FAILURE
        );
    }

    #[test]
    fn compile_prints_and_exits_zero() {
        let good = TempYaml::new("cgood", GOOD);
        assert_eq!(
            super::compile::run(std::slice::from_ref(&good.0), crate::Format::Yaml),
            ExitCode::SUCCESS
        );
    }
}
