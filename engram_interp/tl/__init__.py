"""TransformerLens-native surface of every backend: TL's ActivationCache (cache.py) and the conventions TL
users type (conventions.py: to_string, W_U, cfg, generate, ...). See docs/HOOKS.md, "Coming from
TransformerLens"."""
