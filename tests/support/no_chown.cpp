// no_chown PROGRAM [ARG]...: runs PROGRAM with the chown family of system calls forbidden,
// the calling process killed by SIGSYS as under agentgwd.service's
// SystemCallFilter=~@privileged, so a test can show the daemon starts without them.
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#if defined(__x86_64__)
constexpr unsigned k_arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned k_arch = AUDIT_ARCH_AARCH64;
#else
#error "no_chown: unknown architecture"
#endif

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: no_chown PROGRAM [ARG]...\n");
        return 2;
    }
    const std::vector<unsigned> forbidden = {
#ifdef __NR_chown
        __NR_chown,
#endif
#ifdef __NR_lchown
        __NR_lchown,
#endif
        __NR_fchown,
        __NR_fchownat,
    };
    std::vector<sock_filter> filter;
    filter.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
    filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, k_arch, 1, 0));
    filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));  // a foreign ABI
    filter.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
    for (size_t i = 0; i < forbidden.size(); ++i) {
        // A match jumps over the remaining comparisons and the ALLOW to the KILL.
        const auto skip = static_cast<unsigned char>(forbidden.size() - i);
        filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, forbidden[i], skip, 0));
    }
    filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    const sock_fprog program{static_cast<unsigned short>(filter.size()), filter.data()};

    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        std::fprintf(stderr, "no_chown: cannot install the filter: %s\n", std::strerror(errno));
        return 1;
    }
    ::execv(argv[1], argv + 1);
    std::fprintf(stderr, "no_chown: cannot run %s: %s\n", argv[1], std::strerror(errno));
    return 127;
}
