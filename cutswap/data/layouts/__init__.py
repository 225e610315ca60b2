"""The dataset layouts read from disk, each into the same sample table (``cutswap.data.layouts.common``):
MVTec AD (``mvtec``), BTAD (``btad``), MVTec LOCO (``loco``), VisA's split file (``visa``) and any normal /
abnormal / mask folders (``folder``)."""
