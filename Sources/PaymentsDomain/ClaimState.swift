/// Whether a unique name (`slug:alice`) can still be had (guarantee 6).
public enum ClaimState: Sendable, CaseIterable {
    case free
    case held
    case taken
}
