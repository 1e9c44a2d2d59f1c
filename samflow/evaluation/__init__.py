"""Evaluation tasks: the single-point protocol with box and click mIoU (`points`) and automatic-mask recall (`auto`)."""
