"""The embedded miniature world: story corpus, tokenizer, training of the language models and the crosscoder, world report,
the synthetic real-shape world."""
