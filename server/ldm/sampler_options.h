// How a job is sampled: which sampler, how many steps, guidance. Plain
// values (no LibTorch), so that the service can fill them in.
#ifndef LDMSERVE_SERVER_LDM_SAMPLER_OPTIONS_H_
#define LDMSERVE_SERVER_LDM_SAMPLER_OPTIONS_H_

namespace ldm {

enum class SamplerKind {
  kDdim,
  kPlms,
  kDdpm,
  kEulerAncestral,
  kDpmSolverPP2M,
  kEuler,
  kHeun,
  kLms,
  kDpmSolverPP2MSde,
  kDpmSolverPP2SAncestral,
  kUniPc,
};

// The noise levels the k-diffusion samplers (Euler, Heun, LMS, DPM++) step
// through; DDIM, PLMS and DDPM have their own timesteps.
enum class SigmaSchedule {
  kUniform,      // sigma(linspace(T - 1, 0, steps)): the model's own.
  kKarras,       // Karras et al. 2022, rho = 7, between the model's extremes.
  kExponential,  // Evenly spaced in log sigma.
};

struct SamplerOptions {
  SamplerKind kind = SamplerKind::kDdim;
  int steps = 25;
  double eta = 0.0;  // DDIM only; PLMS requires 0.
  float guidance_scale = 7.5f;
  // img2img: with an initial latent, run only the last int(strength * steps)
  // steps from it, noised to that level (1 = start from pure noise).
  double strength = 1.0;
  // DDIM/PLMS/DDPM timesteps: the reference's "quad" discretisation instead
  // of "uniform".
  bool quadratic_timesteps = false;
  SigmaSchedule sigma_schedule = SigmaSchedule::kUniform;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_SAMPLER_OPTIONS_H_
