

fuzz-model À„=