/// The version of this build, reported by `Health` and `--version`.
public enum PaymentsVersion {
    public static let current = "0.1.0"
}
