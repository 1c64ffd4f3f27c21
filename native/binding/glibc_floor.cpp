// Linked only into the prebuilt binaries (-DMOE_PORTABLE=ON with -Wl,--wrap=exp,--wrap=log; CMakeLists.txt). glibc
// 2.29 added new versions of exp() and log() (exp@GLIBC_2.29, log@GLIBC_2.29, without the SVID error wrapper); a
// binary linked against them does not load on glibc 2.28 (RHEL 8, and the floor of Node's own Linux binaries).
// Every call to exp() and log() is redirected here and bound to the version every glibc has: the same functions,
// setting errno the old way. (log came with the routing rules in the core: the seeded normals and the z-loss.)
#include <cmath>

#if defined(__x86_64__)
__asm__(".symver moe_glibc_exp, exp@GLIBC_2.2.5");
__asm__(".symver moe_glibc_log, log@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver moe_glibc_exp, exp@GLIBC_2.17");
__asm__(".symver moe_glibc_log, log@GLIBC_2.17");
#else
#error "glibc_floor.cpp knows the baseline exp() and log() versions of x86_64 and aarch64 only"
#endif

extern "C" double moe_glibc_exp(double x);
extern "C" double moe_glibc_log(double x);
extern "C" double __wrap_exp(double x) { return moe_glibc_exp(x); }
extern "C" double __wrap_log(double x) { return moe_glibc_log(x); }
