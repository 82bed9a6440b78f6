"""The report stage: scatter statistics, the core-excised L_X baseline, the paper's figures, HTML."""
