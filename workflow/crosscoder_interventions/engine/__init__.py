"""The intervention engine: intervention settings (`interventions`), the literal oracle (`oracle`),
attention adapters (`attention`, `gpt_neo`, `adapters`), fast generation (`generation`), calibration
of the naive scales (`calibration`) and the speed benchmark (`benchmark`)."""
