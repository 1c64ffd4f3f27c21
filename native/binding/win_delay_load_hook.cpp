// Windows (MinGW builds): Node-API's functions are delay-loaded from "NODE.EXE" (the import library that
// CMakeLists.txt makes with dlltool), and this hook answers that name with the module of the running process.
// Without it the addon loads only into a process whose executable is named node.exe; with it, into any host that
// exports Node-API: a renamed node.exe, Electron, or other embedders. node-gyp links the same kind of hook
// (win_delay_load_hook.cc) into every MSVC addon, for the same reason.
#ifdef _WIN32
// clang-format off
#include <windows.h>
#include <delayimp.h>
// clang-format on
#include <cstring>

namespace {

FARPROC WINAPI node_exe_is_this_process(unsigned event, PDelayLoadInfo info) {
  if (event == dliNotePreLoadLibrary && _stricmp(info->szDll, "NODE.EXE") == 0)
    return reinterpret_cast<FARPROC>(GetModuleHandleW(nullptr));
  return nullptr;  // anything else: the default handling
}

}  // namespace

// The delay-load helper (mingw-w64's, in libmingwex) calls this before each DLL it loads.
PfnDliHook __pfnDliNotifyHook2 = node_exe_is_this_process;  // (declared extern "C" by delayimp.h)
#endif
