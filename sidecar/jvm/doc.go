// Package jvm makes the HotSpot JVMs of a container write heap dumps, without
// a JDK, a shell or any Java code in the container: it is what
// `dumpcatcher dump` uses from the preStop hook or from `kubectl exec`.
//
//   - FindJVMs lists the JVM processes of the container it runs in: those of
//     /proc in its own mount namespace (see InContainer), never those of
//     other containers that share the pid namespace.
//   - Attach and Conn.Execute speak HotSpot's dynamic attach protocol (the one
//     jcmd, jmap and jattach use) over the JVM's Unix socket.
//   - HeapDump asks the JVM for a heap dump written under a hidden temporary
//     name and renames it into place only when the JVM reports success.
//   - ReadPerfData and Pressure read the JVM's hsperfdata counters (heap
//     occupancy, GC time) without attaching, for the on-pressure policy.
//
// # The attach protocol (HotSpot on Linux)
//
// A JVM listens on the Unix socket /tmp/.java_pid<pid>, where <pid> is its pid
// in its own pid namespace and /tmp is the /tmp of its own mount namespace
// (HotSpot hard-codes /tmp; java.io.tmpdir plays no part). The socket exists
// only once the attach listener started: a client that finds none creates the
// trigger file .attach_pid<pid> in the JVM's working directory (or in its
// /tmp), sends SIGQUIT, and waits for the socket to appear. The JVM accepts a
// connection only from its own effective uid and gid, or from root (older
// JDK 8 builds: only its own uid and gid), and checks that the trigger file
// belongs to its uid or to root. With -Xrs the listener starts with the JVM,
// since SIGQUIT, which would kill such a JVM, cannot trigger it. One
// connection carries one command: "1\0<command>\0<arg0>\0<arg1>\0<arg2>\0"
// (always three arguments, empty ones included); the JVM answers with a
// status line (0 is success) followed by the command's output, and closes the
// connection. dumpheap answers 0 even when the dump failed: only its output
// ("Heap dump file created") tells.
//
// This package reaches the JVM's files through /proc/<pid>/root and
// /proc/<pid>/cwd, so Attach and HeapDump also work on a Process (from
// Lookup) in another mount namespace when the pid namespace is shared (a
// debug container), and use its own /tmp when /proc does not let it look
// there.
//
// # Files of the app
//
// Everything read from the JVM's side (its /proc entries, its hsperfdata,
// its attach socket) may have been put there by a hostile app: files are
// opened without following a symbolic link and without blocking, only
// regular files are read, and only up to a size; the attach socket must be a
// socket of the JVM's uid, private to it, and is connected to as the very
// file that was checked.
//
// # Credentials
//
// Looking into /proc/<pid>/root and /proc/<pid>/cwd of a process needs its
// uid (or CAP_SYS_PTRACE, which containers rarely have), and old JVMs accept
// only their own uid on the socket. When this process runs as root and the
// JVM does not, every step that touches the JVM (the trigger file, SIGQUIT,
// the socket, the dump directory, hsperfdata) runs on a dedicated OS thread
// whose effective uid and gid are switched to the JVM's with the raw
// setresgid/setresuid system calls (the syscall and x/sys/unix wrappers
// change every thread of the process, which is not wanted here). That thread
// is locked to its goroutine; afterwards the ids are set back and checked,
// and only then is the thread unlocked. If they cannot be set back the thread
// stays locked and the Go runtime destroys it when the goroutine ends, so no
// other goroutine ever runs with the switched credentials. When the switch is
// not permitted (root without CAP_SETUID/CAP_SETGID) the steps run as root,
// which JDK 11 and later accept.
package jvm
