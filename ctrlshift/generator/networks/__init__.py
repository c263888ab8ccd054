"""Network architectures ctrlshift implements itself: the EDM family (:mod:`.edm`) and the reader
of EDM's released pickles that builds them without running pickled code (:mod:`.edm_pickle`)."""
