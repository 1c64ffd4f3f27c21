#include "store_file.h"

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#endif

#include <cstdio>

namespace moe {

#if defined(_WIN32)

namespace {
// UTF-8 paths (what Node hands over) to the wide strings Windows' file API takes.
std::wstring wide(const std::string& s) {
  const int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), w.data(), n);
  return w;
}
HANDLE as_handle(intptr_t h) { return reinterpret_cast<HANDLE>(h); }
OVERLAPPED at(uint64_t offset) {
  OVERLAPPED o{};
  o.Offset = static_cast<DWORD>(offset);
  o.OffsetHigh = static_cast<DWORD>(offset >> 32);
  return o;
}
}  // namespace

StoreFile::StoreFile(const std::string& path, Mode mode) {
  const std::wstring w = wide(path);
  HANDLE h = INVALID_HANDLE_VALUE;
  if (mode == Mode::write) {
    h = CreateFileW(w.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr);
  } else {
    const DWORD share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    if (mode == Mode::read_direct) {
      h = CreateFileW(w.c_str(), GENERIC_READ, share, nullptr, OPEN_EXISTING,
                      FILE_ATTRIBUTE_NORMAL | FILE_FLAG_NO_BUFFERING, nullptr);
      direct_ = h != INVALID_HANDLE_VALUE;
    }
    if (h == INVALID_HANDLE_VALUE)
      h = CreateFileW(w.c_str(), GENERIC_READ, share, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  }
  if (h != INVALID_HANDLE_VALUE) handle_ = reinterpret_cast<intptr_t>(h);
}

bool StoreFile::read_at(void* dst, size_t bytes, uint64_t offset, bool* at_end) const {
  auto* p = static_cast<unsigned char*>(dst);
  if (at_end) *at_end = false;
  while (bytes > 0) {
    OVERLAPPED o = at(offset);
    DWORD got = 0;
    const DWORD want = static_cast<DWORD>(bytes < (DWORD{1} << 30) ? bytes : (DWORD{1} << 30));
    if (!ReadFile(as_handle(handle_), p, want, &got, &o)) {
      if (at_end) *at_end = GetLastError() == ERROR_HANDLE_EOF;
      return false;
    }
    if (got == 0) {
      if (at_end) *at_end = true;
      return false;
    }
    p += got, bytes -= got, offset += got;
  }
  return true;
}

bool StoreFile::write_at(const void* src, size_t bytes, uint64_t offset) {
  auto* p = static_cast<const unsigned char*>(src);
  while (bytes > 0) {
    OVERLAPPED o = at(offset);
    DWORD put = 0;
    const DWORD want = static_cast<DWORD>(bytes < (DWORD{1} << 30) ? bytes : (DWORD{1} << 30));
    if (!WriteFile(as_handle(handle_), p, want, &put, &o) || put == 0) return false;
    p += put, bytes -= put, offset += put;
  }
  return true;
}

bool StoreFile::sync() { return FlushFileBuffers(as_handle(handle_)) != 0; }

bool StoreFile::size(uint64_t* out) const {
  LARGE_INTEGER s;
  if (!GetFileSizeEx(as_handle(handle_), &s)) return false;
  *out = static_cast<uint64_t>(s.QuadPart);
  return true;
}

void StoreFile::close() {
  if (handle_ != kNone) CloseHandle(as_handle(handle_));
  handle_ = kNone;
}

std::string last_error_text() {
  const DWORD code = GetLastError();
  char text[256] = {};
  const DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr, code, 0, text,
                                 sizeof text, nullptr);
  std::string s(text, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == '.')) s.pop_back();
  return s.empty() ? "Windows error " + std::to_string(code) : s;
}

bool replace_file(const std::string& from, const std::string& to) {
  return MoveFileExW(wide(from).c_str(), wide(to).c_str(), MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH) != 0;
}

void remove_file(const std::string& path) { DeleteFileW(wide(path).c_str()); }

long process_id() { return static_cast<long>(GetCurrentProcessId()); }

#else

StoreFile::StoreFile(const std::string& path, Mode mode) {
  int fd = -1;
  if (mode == Mode::write) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  } else {
#if defined(O_DIRECT)
    if (mode == Mode::read_direct) {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
      direct_ = fd >= 0;
    }
#endif
    if (fd < 0) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // (tmpfs and others refuse O_DIRECT)
  }
  if (fd >= 0) handle_ = fd;
}

bool StoreFile::read_at(void* dst, size_t bytes, uint64_t offset, bool* at_end) const {
  auto* p = static_cast<unsigned char*>(dst);
  if (at_end) *at_end = false;
  while (bytes > 0) {
    const ssize_t got = ::pread(static_cast<int>(handle_), p, bytes, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (at_end) *at_end = got == 0;
      return false;
    }
    p += got, bytes -= static_cast<size_t>(got), offset += static_cast<uint64_t>(got);
  }
  return true;
}

bool StoreFile::write_at(const void* src, size_t bytes, uint64_t offset) {
  auto* p = static_cast<const unsigned char*>(src);
  while (bytes > 0) {
    const ssize_t put = ::pwrite(static_cast<int>(handle_), p, bytes, static_cast<off_t>(offset));
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    p += put, bytes -= static_cast<size_t>(put), offset += static_cast<uint64_t>(put);
  }
  return true;
}

bool StoreFile::sync() { return ::fsync(static_cast<int>(handle_)) == 0; }

bool StoreFile::size(uint64_t* out) const {
  struct stat st {};
  if (::fstat(static_cast<int>(handle_), &st) != 0) return false;
  *out = static_cast<uint64_t>(st.st_size);
  return true;
}

void StoreFile::close() {
  if (handle_ != kNone) ::close(static_cast<int>(handle_));
  handle_ = kNone;
}

std::string last_error_text() { return std::strerror(errno); }

bool replace_file(const std::string& from, const std::string& to) { return std::rename(from.c_str(), to.c_str()) == 0; }

void remove_file(const std::string& path) { std::remove(path.c_str()); }

long process_id() { return static_cast<long>(::getpid()); }

#endif

}  // namespace moe
