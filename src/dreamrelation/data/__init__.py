"""Data: exemplar videos, their captions and subject masks, read and checked before any training."""

from dreamrelation.data.dataset import (
    DEFAULT_COLOR_TOLERANCE,
    DEFAULT_SUBJECT_COLORS,
    VIDEO_EXTENSIONS,
    VideoItem,
    check_item,
    decode_subject_labels,
    list_mask_files,
    load_subject_masks,
    scan_dataset,
)
from dreamrelation.data.video import (
    CropGeometry,
    VideoInfo,
    count_frames,
    crop_geometry,
    frame_size,
    read_frames,
    read_video,
    resize_and_crop,
    video_info,
    write_gif,
    write_video,
)

__all__ = [
    "DEFAULT_COLOR_TOLERANCE",
    "DEFAULT_SUBJECT_COLORS",
    "VIDEO_EXTENSIONS",
    "CropGeometry",
    "VideoInfo",
    "VideoItem",
    "check_item",
    "count_frames",
    "crop_geometry",
    "decode_subject_labels",
    "frame_size",
    "list_mask_files",
    "load_subject_masks",
    "read_frames",
    "read_video",
    "resize_and_crop",
    "scan_dataset",
    "video_info",
    "write_gif",
    "write_video",
]
