// Positional reads and writes of one file, on POSIX (pread / pwrite, O_DIRECT where the file system allows) and on
// Windows (ReadFile / WriteFile at an offset, FILE_FLAG_NO_BUFFERING): what the expert store (expert_store.h) needs,
// and nothing that maps the file (a mapping turns a truncated file into a crash; a read returns an error).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moe {

class StoreFile {
 public:
  // read_direct: reads bypass the OS's page cache (offsets, sizes and buffers then kStoreAlign-aligned); it falls
  // back to read where the file system refuses that. write: created or truncated.
  enum class Mode { read, read_direct, write };
  StoreFile() = default;
  StoreFile(const std::string& path, Mode mode);
  ~StoreFile() { close(); }
  StoreFile(const StoreFile&) = delete;
  StoreFile& operator=(const StoreFile&) = delete;

  bool is_open() const { return handle_ != kNone; }
  bool direct() const { return direct_; }
  // All `bytes` at `offset`; false on an error or the end of the file (`at_end` says which, when given).
  bool read_at(void* dst, size_t bytes, uint64_t offset, bool* at_end = nullptr) const;
  bool write_at(const void* src, size_t bytes, uint64_t offset);
  bool sync();
  bool size(uint64_t* out) const;
  void close();

 private:
  static constexpr intptr_t kNone = -1;
  intptr_t handle_ = kNone;  // a file descriptor, or a Windows HANDLE
  bool direct_ = false;
};

// The text of the last failed call of this thread (errno, or Windows' GetLastError).
std::string last_error_text();
// Renames `from` to `to`, replacing a file there (POSIX rename; Windows MoveFileEx with REPLACE_EXISTING).
bool replace_file(const std::string& from, const std::string& to);
void remove_file(const std::string& path);
long process_id();

}  // namespace moe
