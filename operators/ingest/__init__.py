"""Ingest readers: folders of media, manifests (JSONL, Parquet, OBELICS), WebDataset tars, HTML.

Importing this package registers every reader (``media_folder``, ``image_folder``,
``video_folder``, ``audio_folder``, ``jsonl``, ``parquet``, ``obelics``, ``webdataset``, ``html``).
"""

from operators.ingest.folders import AudioFolderReader, ImageFolderReader, MediaFolderReader, VideoFolderReader
from operators.ingest.html_docs import HtmlReader
from operators.ingest.manifests import JsonlReader, ObelicsReader, ParquetReader
from operators.ingest.webdataset_tar import WebDatasetReader

__all__ = [
    "AudioFolderReader",
    "HtmlReader",
    "ImageFolderReader",
    "JsonlReader",
    "MediaFolderReader",
    "ObelicsReader",
    "ParquetReader",
    "VideoFolderReader",
    "WebDatasetReader",
]
