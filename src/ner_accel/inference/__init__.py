"""Raw text to entities: words with offsets, windows over long texts, the tagger."""
