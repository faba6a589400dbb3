"""invenio-records-resources' own FileService and FileResource on our storage, over real HTTP.

A harness for what an InvenioRDM instance does with
``FILES_REST_STORAGE_FACTORY = "oarepo_s3.storage.s3_storage_factory"``:
the records-resources classes run unmodified; only the smallest record
class, service config and app around them are ours (:mod:`.records`,
``conftest.py``). No search engine is needed or used: records are built
through the record API, never through a RecordService (which indexes).
"""
