// The arithmetic of one block of an expert's rows in the backward (core/backward.cpp gathers the rows and unpacks
// the weights): included inside each ISA's translation unit (kernel_impl.h), so that the compiler vectorises these
// loops with that ISA's vectors (and contracts them into FMA where it has one). Loops in a fixed order: the result
// does not depend on the thread that runs it.
struct BackwardKernel {
  static float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

  static float activate(moe::Activation a, float x) {
    switch (a) {
      case moe::Activation::swiglu:
      case moe::Activation::swiglu_clamped:
      case moe::Activation::silu: return x * sigmoid(x);
      case moe::Activation::geglu:
      case moe::Activation::gelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
      case moe::Activation::gelu_tanh:
        return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
      case moe::Activation::relu: return x > 0 ? x : 0.0f;
      case moe::Activation::identity: break;
    }
    return x;
  }

  static float derivative(moe::Activation a, float x) {
    switch (a) {
      case moe::Activation::swiglu:
      case moe::Activation::swiglu_clamped:
      case moe::Activation::silu: {
        const float s = sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
      }
      case moe::Activation::geglu:
      case moe::Activation::gelu:
        return 0.5f * (1.0f + std::erf(x * 0.70710678118654752f)) + x * std::exp(-0.5f * x * x) * 0.3989422804014327f;
      case moe::Activation::gelu_tanh: {
        const float c = 0.7978845608028654f, t = std::tanh(c * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c * (1.0f + 3.0f * 0.044715f * x * x);
      }
      case moe::Activation::relu: return x > 0 ? 1.0f : 0.0f;
      case moe::Activation::identity: break;
    }
    return 1.0f;
  }

  // The hidden unit and its partial derivatives from the pre-activations g (and u when gated).
  struct Unit {
    float a, dg, du;
  };
  static Unit unit(const moe::cpu::BackwardBlock& s, float g, float u) {
    if (s.activation == moe::Activation::swiglu_clamped) {  // gpt-oss; the clamps pass gradient inside their range
      const float gc = std::min<float>(g, s.limit), uc = std::max<float>(std::min<float>(u, s.limit), -s.limit);
      const float sg = sigmoid(s.alpha * gc);
      return {gc * sg * (uc + 1.0f), g <= s.limit ? (sg + s.alpha * gc * sg * (1.0f - sg)) * (uc + 1.0f) : 0.0f,
              u >= -s.limit && u <= s.limit ? gc * sg : 0.0f};
    }
    if (!s.gated) return {activate(s.activation, g), derivative(s.activation, g), 0.0f};
    return {activate(s.activation, g) * u, derivative(s.activation, g) * u, activate(s.activation, g)};
  }

  // Eight partial sums in a fixed order: the compiler vectorises it without reassociating (no -ffast-math), and
  // the result does not depend on the thread that computes it.
  static float dot(const float* a, const float* b, int64_t n) {
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; ++i) t += a[i] * b[i];
    return t;
  }
  static void axpy(float alpha, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
  }

  static void block(const moe::cpu::BackwardBlock& b) {
    const int64_t rows = b.rows, d = b.d, h = b.h;
    const bool gated = b.gated;
    float* pre_g = b.scratch;
    float* pre_u = pre_g + rows * h;
    float* a = pre_u + rows * h;
    float* dpre_g = a + rows * h;
    float* dpre_u = dpre_g + rows * h;
    float* da = dpre_u + rows * h;
    float* y = da + rows * h;
    float* dy = y + rows * d;
    // forward again: pre-activations, hidden units, output rows
    for (int64_t j = 0; j < h; ++j)
      for (int64_t r = 0; r < rows; ++r) {
        pre_g[r * h + j] = dot(&b.w1[j * d], b.x[r], d) + b.b1[j];
        pre_u[r * h + j] = gated ? dot(&b.w3[j * d], b.x[r], d) + b.b3[j] : 0.0f;
      }
    for (int64_t i = 0; i < rows * h; ++i) {
      const Unit u = unit(b, pre_g[i], pre_u[i]);
      a[i] = u.a;
      dpre_g[i] = u.dg;
      dpre_u[i] = u.du;
    }
    for (int64_t i = 0; i < d; ++i)
      for (int64_t r = 0; r < rows; ++r) y[r * d + i] = dot(&b.w2[i * h], &a[r * h], h) + b.b2[i];
    // dL/dy of each row, the slot weight's gradient, and the down projection's gradients
    for (int64_t r = 0; r < rows; ++r) {
      b.d_slot_weight[r] = dot(b.d_out[r], &y[r * d], d);
      for (int64_t i = 0; i < d; ++i) dy[r * d + i] = b.slot_weight[r] * b.d_out[r][i];
    }
    for (int64_t i = 0; i < rows * h; ++i) da[i] = 0.0f;
    for (int64_t i = 0; i < d; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        const float v = dy[r * d + i];
        axpy(v, &a[r * h], &b.dw2[i * h], h);
        axpy(v, &b.w2[i * h], &da[r * h], h);
        if (b.db2) b.db2[i] += v;
      }
    // through the hidden unit to the up projections' gradients and the input's
    for (int64_t i = 0; i < rows * h; ++i) {
      dpre_g[i] *= da[i];
      dpre_u[i] *= da[i];
    }
    for (int64_t j = 0; j < h; ++j)
      for (int64_t r = 0; r < rows; ++r) {
        const float vg = dpre_g[r * h + j];
        axpy(vg, b.x[r], &b.dw1[j * d], d);
        if (b.db1) b.db1[j] += vg;
        if (gated) {
          const float vu = dpre_u[r * h + j];
          if (b.dw3) axpy(vu, b.x[r], &b.dw3[j * d], d);
          if (b.db3) b.db3[j] += vu;
        }
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < h; ++j) {
        axpy(dpre_g[r * h + j], &b.w1[j * d], b.dx[r], d);
        if (gated) axpy(dpre_u[r * h + j], &b.w3[j * d], b.dx[r], d);
      }
  }
};
