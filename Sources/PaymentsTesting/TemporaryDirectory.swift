#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under /tmp, removed with its contents when released.
///
/// Short paths on purpose: a Unix socket path must fit in 107 bytes.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init() {
        var template = Array("/tmp/pd-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed: errno \(errno)")
        self.path = String(cString: template)
    }

    /// A path inside the directory.
    public func file(_ name: String) -> String { "\(self.path)/\(name)" }

    deinit {
        Self.remove(self.path)
    }

    private static func remove(_ path: String) {
        guard let directory = opendir(path) else {
            unlink(path)
            return
        }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            let child = "\(path)/\(name)"
            if entry.pointee.d_type == UInt8(DT_DIR) { Self.remove(child) } else { unlink(child) }
        }
        closedir(directory)
        rmdir(path)
    }
}
