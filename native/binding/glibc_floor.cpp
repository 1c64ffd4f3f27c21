// Linked only into the prebuilt binaries (-DMOE_PORTABLE=ON with -Wl,--wrap=exp; CMakeLists.txt). glibc 2.29
// added a new version of exp() (exp@GLIBC_2.29, without the SVID error wrapper); a binary linked against it
// does not load on glibc 2.28 (RHEL 8, and the floor of Node's own Linux binaries). Every call to exp() is
// redirected here and bound to the version every glibc has: the same function, setting errno the old way.
#include <cmath>

#if defined(__x86_64__)
__asm__(".symver moe_glibc_exp, exp@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver moe_glibc_exp, exp@GLIBC_2.17");
#else
#error "glibc_floor.cpp knows the baseline exp() version of x86_64 and aarch64 only"
#endif

extern "C" double moe_glibc_exp(double x);
extern "C" double __wrap_exp(double x) { return moe_glibc_exp(x); }
