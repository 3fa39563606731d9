"""The base floor: what every component shares, importing no other project code.

* ``errors`` — ``BertlabError``, the one exception type for bad input;
* ``environment`` — the environment defaults every command runs under (offline, before torch loads);
* ``models`` — built-in model names and local model/tokenizer directories (nothing is downloaded);
* ``hf_loading`` — ``from_pretrained`` on a local directory, quietly and with clear errors;
* ``files`` — ``atomic_path``: the one way a file or directory is written atomically;
* ``fingerprint`` — ``fingerprint`` and ``stable_hash``: stable across processes and machines;
* ``faults`` — ``fault_point``: the named places where the crash tests kill a run (``BERTLAB_FAULT``);
* ``truncation`` — how a text (or pair) is cut to ``max_length``: the data modules cut with it, and exports
  ship it beside ``pipeline_bertlab`` (the exports' ``text-classification`` pipeline), so both cut alike.

``datamodules/``, ``lightning_modules/`` and ``callbacks/`` stand on this package and on
third-party code; ``tests/test_layers.py`` checks that nothing here leans back on them.
"""
