"""One module per checkpoint format family that `dictionary.checkpoints` reads (`crosscode`,
`model_diffing` and the `crosscode_family` loader of their shared layout; `dictionary_learning`;
`saelens`), and `common`, what they share."""
