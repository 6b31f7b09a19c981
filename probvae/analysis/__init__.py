"""Looking inside trained models: numbers (`inspection`), pictures
(`plotting`, the only module that imports matplotlib) and the run report
that puts them on a page (`report`)."""
