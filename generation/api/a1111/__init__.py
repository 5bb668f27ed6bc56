"""The AUTOMATIC1111 wire format (docs/architecture.md): webui's `/sdapi/v1/` API.

    POST /sdapi/v1/txt2img, /sdapi/v1/img2img   wait for the images, then answer
         {"images": [b64 png], "parameters": {...}, "info": "<json>"}
    GET  /sdapi/v1/sd-models, samplers, schedulers, loras, embeddings, options, progress
    POST /sdapi/v1/options    {"sd_model_checkpoint": ...} sets this key's default model
    POST /sdapi/v1/interrupt, /sdapi/v1/skip    cancel the caller's own jobs
    GET  upscalers, latent-upscale-modes, sd-vae, prompt-styles, face-restorers, scripts,
         script-info, cmd-flags, memory
    POST /sdapi/v1/png-info, extra-single-image, extra-batch-images; refresh-*, unload- and
         reload-checkpoint answer as webui and change nothing (extras.py)

The key travels as the password of HTTP Basic (`--api-auth user:key`; any user name) or as a
Bearer token. Errors keep webui's (FastAPI's) shapes: 422 `{"detail": [{"loc": ["body", field],
"msg", "type"}]}` for a value that is not valid A1111 input; 401 `{"detail": "Incorrect username
or password"}` with `WWW-Authenticate: Basic`; 404 `{"detail": ...}`; every other error webui's
`{"error": <type>, "detail", "body", "errors"}` with its status: 400 for valid input this server
(or the caller's plan) cannot honour, naming the field.

Where Pictor differs from webui, on purpose:
- The model is per key, not server-wide: POST /options changes the model of this key's later
  requests only. `override_settings.sd_model_checkpoint` picks one per request (a title with or
  without its " [hash]", a model_name, a hash or a sha256). Models are diffusers folders, so a
  title is "<model_id>.safetensors [hash]" and `sha256` is the SHA-256 of the model id (UTF-8),
  not of the weights: stable for a registered model, and no multi-GB file is read to list them.
- `steps` defaults to 20 (webui's API says 50), lowered to the plan's largest step count if
  that is smaller; an explicit value above it is a 400. `sampler_name` defaults to "Euler a".
- `n_iter` batches are one job: batch_size × n_iter images, seeds seed, seed+1, ... (as webui
  numbers them), at most the plan's samples.
- Hires fix (`enable_hr`) is the engine's latent upscale by an integer `hr_scale` of 2, 3 or 4
  (webui's "Latent" `hr_upscaler` modes, each enlarging the latents as webui does), second
  pass strength `denoising_strength` (default 0.7), steps as webui's `hr_second_pass_steps: 0`.
- img2img: one init image; `mask` makes it an inpaint; `mask_blur` (x, y) blurs the edge the
  result is pasted through; `inpainting_fill` 0 (fill, the default) and 1 (original), not the
  latent fills 2 and 3; `inpainting_mask_invert`; `inpaint_full_res` true ("only masked", with
  `inpaint_full_res_padding`, the default as in webui) answers the init image's size; false is
  "whole picture"; `resize_mode` 0 (just resize).
- `save_images`, `do_not_save_*`, `force_task_id`, `comments` and
  `override_settings_restore_afterwards` are ignored: nothing is saved besides the job's own
  images, and override_settings never outlive the request. `image_cfg_scale` only acts on
  instruct-pix2pix models, which Pictor does not serve, so it is ignored as webui ignores it.
- An interrupted request answers 200 with no images (webui returns its partial result);
  the job is canceled and refunded.
- The safety checker runs as on every Pictor format.

The package: tables.py (defaults, bounds, what is refused), errors.py (webui's error shapes),
checkpoints.py (models by webui's names), serializers.py (the bodies, their checks, and a body
to GenerationRequest's fields with the checkpoint and add-ons resolved), inpaint.py (the mask
and the inpaint settings), controlnet.py (the ControlNet extension's units and its
/controlnet/ lists), answers.py, views.py and listings.py, extras.py (upscaling, png-info,
server facts), urls.py.
"""
