"""Human studies: the mask-prediction game (Harth 2022) and the occlusion-pair quiz (Zimmermann et al. 2021).

    python -m viewer.study create --db studies.sqlite runs/demo/baseline --layer conv3 --units 4,9 \
        --step 1500 --task masks --participants 3
"""
