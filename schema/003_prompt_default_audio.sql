-- An operator prompt's own recording, played where its caller's language has
-- none (the late greeting) and always for the early greeting, which is not
-- localised. Stored like the per-language audio: a path under sounds_dir.
ALTER TABLE ivr_prompts ADD COLUMN default_path text CHECK (default_path <> '');
