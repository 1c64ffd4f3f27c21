// ggml's own dequantization, as a filter: the reference the library's GGUF types are checked against bitwise
// (test/gguf-dequantize.test.ts runs it where build.sh has built it; the fixed vectors in test/fixtures came from it).
//   ggml_dequant sizes             every type: id, name, block size, bytes per block
//   ggml_dequant <type id> < blocks > floats    raw blocks in, float32 out (ggml_get_type_traits(type)->to_float)
//   ggml_dequant quantize <type id> < floats > blocks   ggml's reference quantizer (from_float_ref)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"

static unsigned char* read_all(size_t* n) {
  size_t cap = 1 << 16, len = 0;
  unsigned char* buf = malloc(cap);
  for (size_t r; (r = fread(buf + len, 1, cap - len, stdin)) > 0;) {
    len += r;
    if (len == cap) buf = realloc(buf, cap *= 2);
  }
  *n = len;
  return buf;
}

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "sizes") == 0) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
      const struct ggml_type_traits* tr = ggml_get_type_traits((enum ggml_type)t);
      if (tr->type_name && tr->blck_size > 0 && tr->type_size > 0)
        printf("%d %s %lld %zu\n", t, tr->type_name, (long long)tr->blck_size, tr->type_size);
    }
    return 0;
  }
  const int quantize = argc == 3 && strcmp(argv[1], "quantize") == 0;
  if (argc != 2 && !quantize) return fprintf(stderr, "usage: ggml_dequant sizes | <type> | quantize <type>\n"), 2;
  const enum ggml_type type = (enum ggml_type)atoi(argv[quantize ? 2 : 1]);
  const struct ggml_type_traits* tr = ggml_get_type_traits(type);
  size_t n;
  unsigned char* in = read_all(&n);
  if (quantize) {
    if (!tr->from_float_ref || n % (4 * tr->blck_size)) return fprintf(stderr, "bad input\n"), 2;
    const size_t values = n / 4;
    unsigned char* out = malloc(values / tr->blck_size * tr->type_size);
    tr->from_float_ref((const float*)in, out, (int64_t)values);
    fwrite(out, 1, values / tr->blck_size * tr->type_size, stdout);
    return 0;
  }
  if (!tr->to_float || n % tr->type_size) return fprintf(stderr, "bad input\n"), 2;
  const size_t values = n / tr->type_size * tr->blck_size;
  float* out = malloc(values * sizeof(float));
  tr->to_float(in, out, (int64_t)values);
  fwrite(out, sizeof(float), values, stdout);
  return 0;
}
