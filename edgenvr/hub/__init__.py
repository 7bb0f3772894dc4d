"""The city side (`edgenvr hub`): receives clips from many boxes over tus, keeps them in a blob directory and a
database shared by its workers (SQLite in one process by default, PostgreSQL with several), and indexes them
across sites. Nothing here runs on a box, and no box-side package imports it."""
